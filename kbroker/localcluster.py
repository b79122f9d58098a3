"""``kbroker cluster``: a local KRaft cluster of kbroker processes, for demos and tests.

Shapes (node ids are Kafka ``node.id`` values):

* ``--nodes N`` alone: N combined nodes (``process.roles=broker,controller``),
  ids 1..N, every one a voter.
* ``--nodes N --controllers C``: C controller-only nodes, ids 1..C (the
  voters), and N broker-only nodes, ids C+1..C+N.

Ports, all on ``localhost``: the i-th broker listens on ``PLAINTEXT`` at
``port + i - 1``; the j-th controller on ``CONTROLLER`` at
``controller_port + j - 1`` (``controller_port`` defaults to ``port + 100``).

:func:`plan` is pure: it turns the command line into one :class:`NodeSpec`
per node (its settings, ports and paths).  :func:`prepare` writes each
node's ``server.properties``, checks it with :mod:`kbroker.config` and
formats its log directories as ``kbroker format`` does (one cluster id for
all, the one already on disk if the directory was used before).
:func:`run` does both, starts every node as a child process, waits until
every broker port accepts connections, prints the bootstrap string and
then watches the nodes until SIGINT or SIGTERM, which it passes on.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from .config import Config, ConfigError, is_kafka_uuid

__all__ = ["ClusterError", "ClusterPlan", "NodeSpec", "PlanError", "plan", "prepare", "run",
           "write_properties"]

BROKER_LISTENER = "PLAINTEXT"
CONTROLLER_LISTENER = "CONTROLLER"
HOST = "localhost"
CONTROLLER_PORT_OFFSET = 100
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 20

# Settings kbroker cluster gives each node itself; --override may not change
# them (one value for every node would break the cluster's shape).
PER_NODE_SETTINGS = frozenset({
    "node.id", "broker.id", "process.roles", "listeners", "advertised.listeners",
    "listener.security.protocol.map", "controller.listener.names", "inter.broker.listener.name",
    "controller.quorum.voters", "controller.quorum.bootstrap.servers",
    "log.dir", "log.dirs", "metadata.log.dir",
})


class PlanError(ValueError):
    """The requested cluster cannot be laid out (bad counts, ports, overrides)."""


class ClusterError(Exception):
    """The cluster cannot be prepared or started; the message says why."""


@dataclass(frozen=True)
class NodeSpec:
    """One node: its id, roles, ports, files and settings (Kafka names, string values)."""

    node_id: int
    roles: tuple[str, ...]
    broker_port: Optional[int]
    controller_port: Optional[int]
    directory: str
    properties: dict[str, str] = field(compare=False)

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, "server.properties")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.directory, "data")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "kbroker.log")

    @property
    def ports(self) -> list[tuple[str, int]]:
        out = []
        if self.broker_port is not None:
            out.append((BROKER_LISTENER, self.broker_port))
        if self.controller_port is not None:
            out.append((CONTROLLER_LISTENER, self.controller_port))
        return out

    def describe(self) -> str:
        ports = "  ".join(f"{name} {HOST}:{port}" for name, port in self.ports)
        return f"node {self.node_id}  {','.join(self.roles)}  {ports}"


@dataclass(frozen=True)
class ClusterPlan:
    directory: str
    nodes: tuple[NodeSpec, ...]
    voters: str
    overrides: dict[str, str]

    @property
    def brokers(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.is_broker]

    @property
    def controllers(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.is_controller]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{n.broker_port}" for n in self.brokers)


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``key=value`` strings -> dict (later wins), refusing the per-node settings."""
    result: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PlanError(f"override {item!r}: expected key=value")
        if key in PER_NODE_SETTINGS:
            raise PlanError(f"--override {key}: kbroker cluster sets it for each node; "
                            f"edit the nodes' server.properties and start them with kbroker -c instead")
        result[key] = value
    return result


def _port_range(name: str, first: int, count: int) -> range:
    if not 1 <= first or first + count - 1 > 65535:
        raise PlanError(f"{name}: {count} port(s) from {first} do not fit in 1..65535")
    return range(first, first + count)


def plan(nodes: int, controllers: Optional[int] = None, directory: str = ".", port: int = 9092,
         controller_port: Optional[int] = None, overrides: Iterable[str] = ()) -> ClusterPlan:
    """Lay out the cluster: a pure function of the command line (nothing is touched)."""
    if nodes < 1:
        raise PlanError(f"--nodes: at least 1 node, got {nodes}")
    if controllers is not None and controllers < 1:
        raise PlanError(f"--controllers: at least 1 controller, got {controllers}")
    extra = parse_overrides(overrides)
    combined = controllers is None
    n_controllers = nodes if combined else controllers
    if controller_port is None:
        controller_port = port + CONTROLLER_PORT_OFFSET
    broker_ports = _port_range("--port", port, nodes)
    controller_ports = _port_range("--controller-port", controller_port, n_controllers)
    clash = set(broker_ports) & set(controller_ports)
    if clash:
        raise PlanError(f"broker ports {broker_ports[0]}-{broker_ports[-1]} and controller ports "
                        f"{controller_ports[0]}-{controller_ports[-1]} overlap; choose --controller-port")
    directory = os.path.abspath(directory)

    # (node id, roles, broker port, controller port)
    shapes: list[tuple[int, tuple[str, ...], Optional[int], Optional[int]]] = []
    if combined:
        for i in range(nodes):
            shapes.append((i + 1, ("broker", "controller"), broker_ports[i], controller_ports[i]))
    else:
        for j in range(n_controllers):
            shapes.append((j + 1, ("controller",), None, controller_ports[j]))
        for i in range(nodes):
            shapes.append((n_controllers + i + 1, ("broker",), broker_ports[i], None))
    voters = ",".join(f"{nid}@{HOST}:{cport}" for nid, _, _, cport in shapes if cport is not None)

    specs = []
    for nid, roles, bport, cport in shapes:
        node_dir = os.path.join(directory, f"node-{nid}")
        listeners = []
        if bport is not None:
            listeners.append(f"{BROKER_LISTENER}://{HOST}:{bport}")
        if cport is not None:
            listeners.append(f"{CONTROLLER_LISTENER}://{HOST}:{cport}")
        props = {
            "node.id": str(nid),
            "process.roles": ",".join(roles),
            "controller.quorum.voters": voters,
            "listeners": ",".join(listeners),
        }
        if bport is not None:
            props["advertised.listeners"] = f"{BROKER_LISTENER}://{HOST}:{bport}"
            props["inter.broker.listener.name"] = BROKER_LISTENER
        props["controller.listener.names"] = CONTROLLER_LISTENER
        props["listener.security.protocol.map"] = (f"{BROKER_LISTENER}:PLAINTEXT,"
                                                   f"{CONTROLLER_LISTENER}:PLAINTEXT")
        props["log.dirs"] = os.path.join(node_dir, "data")
        props.update(extra)
        specs.append(NodeSpec(nid, roles, bport, cport, node_dir, props))
    return ClusterPlan(directory, tuple(specs), voters, extra)


# ---------------------------------------------------------------------------
# Files: server.properties, cluster id, format.
# ---------------------------------------------------------------------------


def _escape(text: str, key: bool) -> str:
    """Java .properties escaping (what Properties.store does, minus \\uXXXX: the file is UTF-8)."""
    out = []
    for i, c in enumerate(text):
        if c == "\\":
            out.append("\\\\")
        elif c in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[c])
        elif c == " " and (key or i == 0):
            out.append("\\ ")
        elif key and c in "=:#!":
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def properties_text(node: NodeSpec, overrides: Iterable[str] = ()) -> str:
    """The node's server.properties: its generated settings, then the --override ones."""
    overrides = set(overrides)
    lines = [
        f"# Node {node.node_id} of a local kbroker cluster, written by `kbroker cluster`",
        "# (rewritten on every start of the cluster; `kbroker -c` this file starts the node alone).",
    ]
    for section in ([k for k in node.properties if k not in overrides],
                    [k for k in node.properties if k in overrides]):
        if section and section[0] in overrides:
            lines.append("# --override")
        lines.extend(f"{_escape(k, True)}={_escape(node.properties[k], False)}" for k in section)
    return "\n".join(lines) + "\n"


def write_properties(cluster: ClusterPlan) -> None:
    """Write every node's server.properties (creating its directory)."""
    for node in cluster.nodes:
        os.makedirs(node.directory, exist_ok=True)
        tmp = node.config_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(properties_text(node, cluster.overrides))
        os.replace(tmp, node.config_path)


def _directories(config: Config) -> tuple[list[str], str]:
    """(every directory to format, the metadata directory), as kbroker format picks them."""
    metadata_dir = config["metadata.log.dir"] or config["log.dirs"][0]
    return sorted(set(config["log.dirs"]) | {metadata_dir}), metadata_dir


def existing_cluster_id(cluster: ClusterPlan, configs: Sequence[Config]) -> Optional[str]:
    """The cluster id already in the directory's meta.properties files, if any.

    Every ``node-*`` directory is looked at (a node of an earlier, larger
    run included); two different ids are refused.
    """
    from kbroker import metadata_log

    dirs = set(glob.glob(os.path.join(cluster.directory, "node-*", "data")))
    for config in configs:
        dirs.update(_directories(config)[0])
    found: dict[str, str] = {}
    for d in sorted(dirs):
        try:
            props = metadata_log.read_meta_properties(d)
        except OSError as e:
            raise ClusterError(f"cannot read {os.path.join(d, 'meta.properties')}: {e.strerror or e}") from None
        if props and props.get("cluster.id"):
            found.setdefault(props["cluster.id"], d)
    if len(found) > 1:
        where = ", ".join(f"{cid} in {d}" for cid, d in found.items())
        raise ClusterError(f"{cluster.directory} holds nodes of different clusters ({where})")
    return next(iter(found), None)


def prepare(cluster: ClusterPlan, out: Callable[[str], None] = lambda line: None) -> str:
    """Write the nodes' files, check their settings and format their directories; the cluster id.

    ConfigError for settings kbroker refuses; ClusterError when the
    directories cannot be formatted for this cluster.
    """
    from kbroker import metadata_log

    write_properties(cluster)
    configs = []
    for node in cluster.nodes:
        try:
            configs.append(Config.load(node.config_path))
        except ConfigError as e:
            raise ConfigError(f"node {node.node_id} ({node.config_path}): {e}") from None
    wanted = cluster.overrides.get("cluster.id", "").strip() or None
    if wanted is not None and not is_kafka_uuid(wanted):
        raise ConfigError(f"cluster.id: {wanted!r} is not a Kafka cluster id")
    found = existing_cluster_id(cluster, configs)
    if wanted and found and wanted != found:
        raise ClusterError(f"cluster.id={wanted} was given, but {cluster.directory} holds cluster {found}")
    cluster_id = wanted or found or metadata_log.new_uuid()
    for node, config in zip(cluster.nodes, configs):
        directories, metadata_dir = _directories(config)
        try:
            written = metadata_log.format_directories(directories, node.node_id, cluster_id,
                                                      ignore_formatted=True, metadata_dir=metadata_dir,
                                                      out=lambda line: None)
        except metadata_log.FormatError as e:
            raise ClusterError(f"node {node.node_id}: {e}") from None
        for d in written:
            out(f"formatted {d}")
    return cluster_id


# ---------------------------------------------------------------------------
# Processes.
# ---------------------------------------------------------------------------


def port_free(port: int) -> bool:
    """Whether a TCP port on 127.0.0.1 can be bound now (another process may take it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"    (cannot read {path}: {e.strerror or e})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _child_setup_function() -> Optional[Callable[[], None]]:
    """On Linux, children get SIGTERM if this process dies without stopping them (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return setup


def _child_env() -> dict[str, str]:
    # The children import kbroker from where this process did, whatever their cwd.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class _Nodes:
    """The running children, by node."""

    def __init__(self, cluster: ClusterPlan, say: Callable[[str], None]):
        self.cluster = cluster
        self.say = say
        self.procs: dict[int, subprocess.Popen] = {}
        self.reported: set[int] = set()

    def start(self) -> None:
        env = _child_env()
        setup = _child_setup_function()
        for node in self.cluster.nodes:
            with open(node.log_path, "ab") as logf:
                logf.write(f"=== kbroker cluster: node {node.node_id} starting at "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
                logf.flush()
                # Its own process group: a Ctrl-C reaches this process only,
                # which then stops the nodes (SIGTERM, then SIGKILL).
                self.procs[node.node_id] = subprocess.Popen(
                    [sys.executable, "-m", "kbroker", "-c", node.config_path],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    env=env, process_group=0, preexec_fn=setup)
            self.say(f"{node.describe()}  pid {self.procs[node.node_id].pid}  log {node.log_path}")

    def exited(self) -> list[tuple[NodeSpec, int]]:
        """Nodes that exited since the last call, with their exit status."""
        result = []
        for node in self.cluster.nodes:
            proc = self.procs.get(node.node_id)
            if proc is not None and node.node_id not in self.reported and proc.poll() is not None:
                self.reported.add(node.node_id)
                result.append((node, proc.returncode))
        return result

    def alive(self) -> int:
        return sum(1 for p in self.procs.values() if p.poll() is None)

    def stop(self, timeout: float) -> None:
        """SIGTERM every live node, wait up to ``timeout`` seconds, then SIGKILL."""
        live = {nid: p for nid, p in self.procs.items() if p.poll() is None}
        for p in live.values():
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for nid, p in live.items():
            try:
                code = p.wait(max(0.0, deadline - time.monotonic()))
                self.say(f"node {nid} stopped ({_exit_text(code)})")
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.say(f"node {nid} did not stop within {timeout:g} s: killed")
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def run(nodes: int, controllers: Optional[int] = None, directory: Optional[str] = None, port: int = 9092,
        controller_port: Optional[int] = None, overrides: Iterable[str] = (), *,
        start_timeout: float = START_TIMEOUT, stop_timeout: float = STOP_TIMEOUT) -> int:
    """``kbroker cluster``: 0 after a stop by SIGINT/SIGTERM, 1 if it could not start, 2 for bad arguments."""

    def say(line: str) -> None:
        print(line, flush=True)

    def complain(line: str) -> None:
        print(f"kbroker cluster: {line}", file=sys.stderr, flush=True)

    overrides = list(overrides)
    temporary = directory is None
    try:
        # Checked before a temporary directory is made for nothing.
        plan(nodes, controllers, directory or ".", port, controller_port, overrides)
    except PlanError as e:
        complain(str(e))
        return 2
    if temporary:
        directory = tempfile.mkdtemp(prefix="kbroker-cluster-")
    cluster = plan(nodes, controllers, directory, port, controller_port, overrides)
    try:
        cluster_id = prepare(cluster)
    except ConfigError as e:
        complain(str(e))
        return 2
    except (ClusterError, OSError) as e:
        complain(str(e))
        return 1
    busy = [(node, name, p) for node in cluster.nodes for name, p in node.ports if not port_free(p)]
    if busy:
        for node, name, p in busy:
            complain(f"port {p} (node {node.node_id}, {name}) is already in use")
        return 1

    shape = (f"{nodes} combined broker+controller node{'s' if nodes > 1 else ''}" if controllers is None
             else f"{controllers} controller{'s' if controllers > 1 else ''} and "
                  f"{nodes} broker{'s' if nodes > 1 else ''}")
    say(f"cluster {cluster_id}: {shape}")
    say(f"directory: {cluster.directory}" + (" (temporary; kept after exit)" if temporary else
                                            " (kept after exit)"))

    stopping: list[int] = []

    def on_signal(signum, frame) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    running = _Nodes(cluster, say)
    try:
        running.start()

        # Start-up: every broker port accepting connections, or a failure.
        pending = [n for n in cluster.brokers]
        deadline = time.monotonic() + start_timeout
        while pending and not stopping:
            failed = running.exited()
            if failed:
                for node, code in failed:
                    complain(f"node {node.node_id} exited during start-up ({_exit_text(code)}); "
                             f"the end of {node.log_path}:\n{_log_tail(node.log_path)}")
                say("stopping the other nodes")
                running.stop(stop_timeout)
                return 1
            pending = [n for n in pending if not _accepts(n.broker_port)]
            if not pending:
                break
            if time.monotonic() > deadline:
                for node in pending:
                    complain(f"node {node.node_id} does not accept connections on {HOST}:{node.broker_port} "
                             f"after {start_timeout:g} s; the end of {node.log_path}:\n"
                             f"{_log_tail(node.log_path)}")
                say("stopping every node")
                running.stop(stop_timeout)
                return 1
            time.sleep(0.05)
        if not stopping:
            say(f"bootstrap: {cluster.bootstrap}")
            say("Ctrl-C (or SIGTERM) stops every node")

        # Running: report nodes that exit; the others carry on.
        while not stopping:
            for node, code in running.exited():
                say(f"node {node.node_id} exited unexpectedly ({_exit_text(code)}); log {node.log_path}")
            if running.alive() == 0:
                complain("every node has exited")
                return 1
            time.sleep(0.2)
        say(f"received {signal.Signals(stopping[0]).name}: stopping every node")
        running.stop(stop_timeout)
        return 0
    finally:
        # Whatever happened above, no node outlives this command.
        for p in running.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
