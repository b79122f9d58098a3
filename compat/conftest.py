"""Fixtures that run a REAL kbroker process for the compat suites.

* ``broker``: one kbroker for the whole session (started on first use), with
  ``.bootstrap``, ``.host``, ``.port``, ``.data_dir``, ``.start()``,
  ``.stop()`` (SIGTERM and wait), ``.kill()`` (SIGKILL), ``.restart()``.
* ``start_broker(**overrides)``: a private kbroker for one test (retention,
  restarts, SIGKILL); ``start_broker(log_retention_check_interval_ms=200)``
  or ``start_broker({"log.retention.check.interval.ms": 200})``.
* ``make_topic(partitions=3, config=None)`` / ``topic``: a fresh, uniquely
  named topic created with confluent-kafka's AdminClient.

Set ``KBROKER_BOOTSTRAP=host:port`` to run against an already running
Kafka-compatible server instead; tests that must start, stop or kill a
broker then skip.  If that server cannot create topics, set
``KBROKER_TOPIC_CMD`` to a shell command (``{name}`` and ``{partitions}``
are substituted) that creates one.

A failing test shows the broker's log lines written while it ran.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from compat import kraw

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0
COMPAT_TEST_TIMEOUT = 180  # seconds, per test (pytest-timeout), a backstop only

# Settings every broker started here gets, on top of the test's own.
BASE_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
}

EXTERNAL = os.environ.get("KBROKER_BOOTSTRAP")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerStartError(RuntimeError):
    pass


class BrokerProcess:
    """One kbroker subprocess, restartable on the same port and data dir."""

    external = False

    def __init__(self, workdir: Path, overrides: Optional[dict[str, Any]] = None, port: Optional[int] = None,
                 env: Optional[dict[str, str]] = None, rlimits: Optional[dict[int, tuple[int, int]]] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "kbroker.log"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.overrides = {**BASE_OVERRIDES, **{k: str(v) for k, v in (overrides or {}).items()}}
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.startup_seconds: Optional[float] = None
        self.exit_codes: list[int] = []
        self.env = dict(env or {})  # extra environment (e.g. KBROKER_CRASH_POINT); change it between starts
        self.rlimits = dict(rlimits or {})  # resource.RLIMIT_* -> (soft, hard), set in the child before exec

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "kbroker",
               "--override", f"listeners=PLAINTEXT://{self.host}:{self.port}",
               "--override", f"log.dirs={self.data_dir}"]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_text(self, since: int = 0, limit: int = 20000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def start(self, timeout: float = START_TIMEOUT) -> "BrokerProcess":
        if self.alive():
            raise RuntimeError("kbroker is already running")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        log = open(self.log_path, "ab")
        log.write(f"===== start #{self.starts + 1}: {shlex.join(self.command())}\n".encode())
        log.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=self._set_rlimits if self.rlimits else None)
        log.close()
        self.starts += 1
        ok = kraw.wait_until_ready(self.host, self.port, t0 + timeout, self.alive)
        if not ok:
            died = not self.alive()
            if not died:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
            raise BrokerStartError(
                f"kbroker {'exited with ' + str(self.proc.returncode) if died else 'did not answer Metadata'} "
                f"within {timeout:.0f}s of start\n--- kbroker log ({self.log_path}) ---\n{self.log_text()}")
        self.startup_seconds = time.monotonic() - t0
        return self

    def _set_rlimits(self) -> None:  # runs in the child, between fork and exec
        import resource

        for which, limits in self.rlimits.items():
            resource.setrlimit(which, limits)

    def _signal(self, sig: int) -> None:
        if self.alive():
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; SIGKILL (and raise) if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
                self.exit_codes.append(self.proc.returncode)
                raise AssertionError(f"kbroker did not exit within {timeout}s of SIGTERM")
        code = self.proc.returncode
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.alive():
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
            self.exit_codes.append(self.proc.returncode)

    def restart(self) -> "BrokerProcess":
        self.stop()
        return self.start()


@dataclass
class ExternalBroker:
    """A server started by someone else (KBROKER_BOOTSTRAP)."""

    bootstrap: str
    external = True
    data_dir = None
    log_path = None
    pid = None

    @property
    def host(self) -> str:
        return self.bootstrap.split(",")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])

    def alive(self) -> bool:
        return True

    def log_size(self) -> int:
        return 0

    def log_text(self, since: int = 0, limit: int = 0) -> str:
        return ""

    def _no(self, *a, **kw):
        pytest.skip("needs a broker process of its own (KBROKER_BOOTSTRAP is set)")

    start = stop = kill = restart = _no


# -- reporting -----------------------------------------------------------------------


def watch_broker(request, broker) -> None:
    """Remember where the broker's log was when this test started."""
    if not getattr(broker, "external", False):
        request.node.__dict__.setdefault("_kbroker_logs", []).append((broker, broker.log_size()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker, since in item.__dict__.get("_kbroker_logs", []):
            text = broker.log_text(since)
            report.sections.append((f"kbroker log {broker.log_path} (from this test on)", text or "(empty)"))


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if "compat" in item.nodeid.split("/")[0] and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(COMPAT_TEST_TIMEOUT))


# -- brokers --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _session_broker(tmp_path_factory):
    if EXTERNAL:
        yield ExternalBroker(EXTERNAL)
        return
    b = BrokerProcess(tmp_path_factory.mktemp("kbroker-session"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def broker(request, _session_broker):
    """The shared kbroker (restarted first if an earlier test left it down)."""
    b = _session_broker
    if not b.external and not b.alive():
        b.start()
    watch_broker(request, b)
    return b


def _key(name: str) -> str:
    return name if "." in name else name.replace("_", ".")


@pytest.fixture
def start_broker(request, tmp_path):
    """Factory: start a private kbroker with extra settings; stopped after the test."""
    if EXTERNAL:
        pytest.skip("needs a broker process of its own (KBROKER_BOOTSTRAP is set)")
    started: list[BrokerProcess] = []

    def start(settings: Optional[dict[str, Any]] = None, *, env: Optional[dict[str, str]] = None,
              rlimits: Optional[dict[int, tuple[int, int]]] = None, port: Optional[int] = None,
              data_dir: Optional[Path] = None, wait: bool = True, **overrides: Any) -> BrokerProcess:
        """``env``: extra environment variables; ``rlimits``: {resource.RLIMIT_*: (soft, hard)};
        ``data_dir``: the log.dirs directory (e.g. on a small tmpfs); ``wait=False``: return the
        process unstarted (the caller calls ``.start()``)."""
        merged = {**(settings or {}), **{_key(k): v for k, v in overrides.items()}}
        b = BrokerProcess(tmp_path / f"kbroker-{len(started)}", merged, port=port, env=env, rlimits=rlimits)
        if data_dir is not None:
            b.data_dir = Path(data_dir)
        started.append(b)
        watch_broker(request, b)
        return b.start() if wait else b

    yield start
    for b in started:
        try:
            b.stop()
        except AssertionError:
            pass


# -- the abuse catalogue (compat/abuse.py) --------------------------------------------


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from compat import abuse

    lines = abuse.catalogue_lines()
    if lines:
        terminalreporter.section("abuse catalogue")
        for line in lines:
            terminalreporter.write_line(line)


# -- topics ---------------------------------------------------------------------------


@dataclass
class Topic:
    name: str
    partitions: int

    def __str__(self) -> str:
        return self.name


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, name: str, partitions: int = 3, config: Optional[dict[str, Any]] = None,
                 timeout: float = 20.0) -> Topic:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})
    new = NewTopic(name, num_partitions=partitions, replication_factor=1,
                   config={k: str(v) for k, v in (config or {}).items()})
    cmd = os.environ.get("KBROKER_TOPIC_CMD") if EXTERNAL else None
    if cmd:
        subprocess.run(cmd.format(name=name, partitions=partitions), shell=True, check=True, timeout=30)
    else:
        admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[name].result(timeout)
    return Topic(name, wait_for_topic(bootstrap, name, partitions, timeout))


def wait_for_topic(bootstrap: str, name: str, partitions: Optional[int] = None, timeout: float = 20.0) -> int:
    """Wait until Metadata shows the topic with leaders on every partition."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=5)
        t = md.topics.get(name)
        last = t
        if t is not None and t.error is None and t.partitions and all(p.leader >= 0 for p in t.partitions.values()):
            if partitions is None or len(t.partitions) == partitions:
                return len(t.partitions)
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready within {timeout}s: {last}")


@pytest.fixture
def make_topic(broker):
    def make(partitions: int = 3, config: Optional[dict[str, Any]] = None, name: Optional[str] = None,
             on: Any = None) -> Topic:
        target = on or broker
        return create_topic(target.bootstrap, name or unique_name(), partitions, config)

    return make


@pytest.fixture
def topic(make_topic) -> Topic:
    """A fresh topic with 3 partitions on the shared broker."""
    return make_topic(3)
