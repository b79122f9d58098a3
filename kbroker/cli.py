"""Command line: ``kbroker [-c server.properties] [server.properties] [--override key=value]...``.

Reads the configuration (Kafka names; see :mod:`kbroker.config`), sets up
logging on stderr, and hands the Config to :func:`kbroker.server.run`.
Exit status: 0 after a clean shutdown, 2 for a bad command line or
configuration (including a node shape the server cannot run yet), 1 when
the server cannot be started.

Two more commands do what ``kafka-storage.sh`` does:

``kbroker format -t CLUSTER_ID [-c server.properties] [--override k=v]... [--ignore-formatted]``
    writes ``meta.properties`` into every log directory (and
    ``metadata.log.dir``); exit 1 if a directory is already formatted
    (for this cluster and node: unless ``--ignore-formatted``; for another:
    always).  A single node does not need it: it formats itself on first
    start.
``kbroker random-uuid``
    prints a new cluster id.

And one to try a cluster on one machine:

``kbroker cluster [--nodes N] [--controllers C] [--dir DIR] [--port P] [--controller-port Q] [--override k=v]...``
    starts a local cluster as child processes (see :mod:`kbroker.localcluster`),
    prints its bootstrap string, and stops every node on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn, Optional, Sequence

from kbroker.config import Config, ConfigError, is_kafka_uuid

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

log = logging.getLogger("kbroker")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        self.print_usage(sys.stderr)
        print(f"kbroker: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="kbroker",
        description="An Apache Kafka-compatible broker: a single node with no setup, or a node of a KRaft cluster.",
        epilog="Settings use Kafka's broker config names, e.g. "
               "--override listeners=PLAINTEXT://127.0.0.1:9092 --override log.dirs=/var/lib/kbroker. "
               "Storage commands, as kafka-storage.sh: 'kbroker format -t CLUSTER_ID -c FILE' "
               "and 'kbroker random-uuid'. A local cluster: 'kbroker cluster --nodes 3' "
               "(see kbroker cluster --help).",
    )
    p.add_argument("properties", nargs="?", metavar="server.properties",
                   help="properties file, as for kafka-server-start.sh")
    p.add_argument("-c", "--config", metavar="FILE", help="properties file (same as the positional form)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set one config; repeatable; wins over the file")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help="logging threshold (default INFO)")
    p.add_argument("--print-config", action="store_true",
                   help="print every effective setting with its source, then exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("kbroker")
    except Exception:
        return "unknown"


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))


def _load_server():
    """Import kbroker.server; return its ``run`` or None with a message printed."""
    try:
        module = importlib.import_module("kbroker.server")
    except ModuleNotFoundError as e:
        if e.name in ("kbroker.server", "kbroker"):
            print("kbroker: the server module (kbroker.server) is not available in this installation",
                  file=sys.stderr)
            return None
        raise
    run = getattr(module, "run", None)
    if run is None:
        print("kbroker: kbroker.server has no run(config) function", file=sys.stderr)
        return None
    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The storage commands come first, as in kafka-storage.sh; anything else
    # is the server's command line (whose one positional is a properties file).
    if argv and argv[0] == "format":
        return format_main(argv[1:])
    if argv and argv[0] == "random-uuid":
        return random_uuid_main(argv[1:])
    if argv and argv[0] == "cluster":
        return cluster_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"kbroker {_version()}")
        return 0
    if args.config and args.properties and args.config != args.properties:
        print(f"kbroker: two config files given ({args.config} and {args.properties}); give one",
              file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    path = args.config or args.properties
    try:
        config = Config.load(path, args.override)
    except ConfigError as e:
        print(f"kbroker: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        for name, value, source in config.describe():
            print(f"{name}={'' if value is None else value}  # {source}")
        return 0
    problem = config.unsupported_cluster()
    if problem is not None:
        # Refused before anything is opened or bound: a node that half-starts
        # as a single node would create a cluster of its own.
        print(f"kbroker: {problem}", file=sys.stderr)
        return 2
    run = _load_server()
    if run is None:
        return 1
    log.info("kbroker %s starting (node.id=%s, config %s)", _version(), config["node.id"],
             path or "defaults")
    try:
        run(config)
    except BaseException as e:  # noqa: B902 - every way out of the server ends here, by design
        return _report_failure(e)
    return 0


def build_format_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="kbroker format",
        description="Write meta.properties into every log directory, like kafka-storage.sh format.",
    )
    p.add_argument("-t", "--cluster-id", required=True, metavar="CLUSTER_ID",
                   help="the cluster id (kbroker random-uuid prints a new one)")
    p.add_argument("-c", "--config", metavar="FILE", help="the node's server.properties")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set one config; repeatable; wins over the file")
    p.add_argument("-g", "--ignore-formatted", action="store_true",
                   help="skip directories already formatted for this cluster and node")
    quorum = p.add_mutually_exclusive_group()
    quorum.add_argument("-s", "--standalone", action="store_true",
                        help="this controller is the whole initial quorum (dynamic quorum)")
    quorum.add_argument("-N", "--no-initial-controllers", action="store_true",
                        help="this controller joins an existing dynamic quorum")
    return p


def format_main(argv: Sequence[str]) -> int:
    """``kbroker format``: 0 done (or nothing to do), 1 refused, 2 bad arguments or config."""
    args = build_format_parser().parse_args(argv)
    try:
        config = Config.load(args.config, args.override)
    except ConfigError as e:
        print(f"kbroker: {e}", file=sys.stderr)
        return 2
    cluster_id = args.cluster_id.strip()
    if not is_kafka_uuid(cluster_id):
        print(f"kbroker: cluster id {cluster_id!r} does not appear to be a valid UUID "
              f"(22 characters of url-safe base64; kbroker random-uuid prints one)", file=sys.stderr)
        return 1
    if config["cluster.id"] is not None and config["cluster.id"] != cluster_id:
        print(f"kbroker: the cluster.id setting ({config['cluster.id']}) and -t ({cluster_id}) disagree",
              file=sys.stderr)
        return 1
    controller = "controller" in config["process.roles"]
    if args.standalone and not controller:
        print("kbroker: --standalone is for a controller, and process.roles does not include controller",
              file=sys.stderr)
        return 1
    if (controller and not config.embedded_quorum and not config["controller.quorum.voters"]
            and not (args.standalone or args.no_initial_controllers)):
        # Kafka's rule: a dynamic quorum (KIP-853) must be told whether this
        # controller starts it or joins it.
        print("kbroker: because controller.quorum.voters is not set on this controller, you must specify "
              "--standalone or --no-initial-controllers", file=sys.stderr)
        return 1
    metadata_dir = config["metadata.log.dir"] or config["log.dirs"][0]
    directories = sorted(set(config["log.dirs"]) | {metadata_dir})
    # Imported here, as the server is: the config-only paths of the command
    # line (--help, --print-config, a bad setting) need not load trio and the logs.
    from kbroker import metadata_log

    try:
        metadata_log.format_directories(directories, config["node.id"], cluster_id,
                                        ignore_formatted=args.ignore_formatted, metadata_dir=metadata_dir)
    except metadata_log.FormatError as e:
        print(f"kbroker: {e}", file=sys.stderr)
        return 1
    return 0


def random_uuid_main(argv: Sequence[str]) -> int:
    """``kbroker random-uuid``: print a new cluster id, as kafka-storage.sh random-uuid."""
    p = _Parser(prog="kbroker random-uuid", description="Print a new random cluster id.")
    p.parse_args(argv)
    from kbroker import metadata_log

    print(metadata_log.new_uuid())
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {value}")
    return value


def build_cluster_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="kbroker cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start a local KRaft cluster of kbroker processes, print its bootstrap string,\n"
                    "and stop every node on Ctrl-C or SIGTERM.",
        epilog="""\
shapes:
  --nodes N                   N combined nodes (process.roles=broker,controller), ids 1..N,
                              every one a voter
  --nodes N --controllers C   C controller-only nodes, ids 1..C (the voters), and
                              N broker-only nodes, ids C+1..C+N

ports (all on localhost):
  the i-th broker listens on PLAINTEXT at PORT+i-1 (9092, 9093, 9094 for 3 nodes);
  the j-th controller on CONTROLLER at CONTROLLER_PORT+j-1 (default PORT+100: 9192, ...)

files:
  DIR/node-<id>/server.properties  the node's settings (a Kafka server.properties)
  DIR/node-<id>/data               its log directory, formatted with one cluster id
  DIR/node-<id>/kbroker.log        its stdout and stderr
  DIR is kept after exit; starting again with the same --dir reuses its data and cluster id.

exit status: 0 after Ctrl-C/SIGTERM, 1 if the cluster could not start, 2 for bad arguments.
A node that exits while the cluster runs is reported; the others keep running.""",
    )
    p.add_argument("--nodes", type=_positive_int, default=3, metavar="N",
                   help="brokers (combined broker+controller nodes unless --controllers); default 3")
    p.add_argument("--controllers", type=_positive_int, default=None, metavar="C",
                   help="separate controller-only nodes instead of combined ones")
    p.add_argument("--dir", metavar="DIR", default=None,
                   help="where the nodes' files go (default: a new temporary directory, printed)")
    p.add_argument("--port", type=_port, default=9092, metavar="PORT",
                   help="the first broker's port (default 9092)")
    p.add_argument("--controller-port", type=_port, default=None, metavar="CONTROLLER_PORT",
                   help="the first controller's port (default PORT+100)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set one config on every node (Kafka names); repeatable")
    return p


def cluster_main(argv: Sequence[str]) -> int:
    """``kbroker cluster``: see :mod:`kbroker.localcluster`."""
    args = build_cluster_parser().parse_args(argv)
    from kbroker import localcluster

    return localcluster.run(args.nodes, args.controllers, args.dir, args.port, args.controller_port,
                            args.override)


def _leaves(exc: BaseException):
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _report_failure(exc: BaseException) -> int:
    """One line on stderr for a server that could not start or had to stop; the exit status.

    Trio hands back a failure from inside the server's nurseries wrapped in
    (nested) exception groups, whose default rendering is dozens of lines
    of tracebacks through trio's internals for what is usually one fact: a
    data dir is not writable, meta.properties belongs to another node, the
    metadata log failed.  The cause worth reading is picked from the group
    (configuration problems first); the traceback stays available at
    ``--log-level DEBUG``.  Status 2 for configuration errors (as for a bad
    command line), 130 for Ctrl-C, 1 otherwise.
    """
    # trio.Cancelled leaves are the echo of the real failure cancelling its siblings.
    leaves = [e for e in _leaves(exc) if type(e).__name__ != "Cancelled"] or [exc]

    def rank(e: BaseException) -> int:
        if isinstance(e, ConfigError):
            return 0
        if isinstance(e, SystemExit) and isinstance(e.code, str):
            return 1
        if isinstance(e, KeyboardInterrupt):
            return 4
        if isinstance(e, Exception):
            return 2 if type(e).__module__.startswith("kbroker") else 3
        return 5

    cause = min(leaves, key=rank)
    log.debug("the server stopped", exc_info=exc)
    if isinstance(cause, KeyboardInterrupt):
        return 130
    if isinstance(cause, SystemExit):
        if not isinstance(cause.code, str):
            return cause.code if isinstance(cause.code, int) else 1
        message = cause.code.removeprefix("kbroker: ")
    elif isinstance(cause, (ConfigError, OSError)) or type(cause).__module__.startswith("kbroker"):
        message = str(cause) or type(cause).__name__
    else:
        # Not a condition we report by name: a bug, whose traceback is the point.
        log.error("unexpected failure", exc_info=cause)
        message = f"{type(cause).__name__}: {cause}"
    print(f"kbroker: {message}", file=sys.stderr)
    return 2 if isinstance(cause, ConfigError) else 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
