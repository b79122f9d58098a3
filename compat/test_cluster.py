"""A multi-node KRaft cluster of real kbroker processes, driven by real clients over real sockets.

Clusters are started with ``kbroker cluster`` (which also tests the command);
a node killed with SIGKILL is started again by hand from the
``server.properties`` the command wrote (``kbroker -c FILE``), as an operator
would.  The node with a foreign cluster id is laid out by hand with
``kbroker random-uuid`` and ``kbroker format``.

"Through node N" means a request sent on a socket to node N's broker
listener: per-node questions (Metadata, DescribeCluster, DescribeConfigs) go
over raw connections (``compat.kraw``) so that no client can route them
elsewhere; the changes are made with confluent-kafka and kafka-python, plus a
raw CreateTopics on every node so that every node's forwarding is exercised.

Every wait has a deadline and polls; the deadlines are generous because the
suite must pass on a loaded 2-core machine (speed belongs in a benchmark).

One cluster of 3 combined nodes is shared by the tests that change nothing
but topics (membership, DescribeQuorum, admin requests through any node,
auto-creation, producer ids, produce/consume across nodes) and is then
stopped by SIGTERM of ``kbroker cluster``; every destructive test (SIGKILL
or SIGTERM of a node, a node of another cluster, 1 controller + 3 brokers,
catch-up through a metadata snapshot) has a cluster of its own, torn down
with SIGKILL.  Ports: ``kbroker cluster`` lays a cluster's ports out in a
row, so :func:`free_port_block` finds runs of free ports.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from compat import kraw
from compat.conftest import EXTERNAL, REPO, unique_name, watch_broker

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(bool(EXTERNAL), reason="starts clusters of its own (KBROKER_BOOTSTRAP is set)"),
]

HOST = "localhost"
START_TIMEOUT = 60.0  # the command itself gives up after 30 s
WAIT = 30.0  # deadline for anything the cluster should do "soon"
STOP_TIMEOUT = 45.0  # the command sends SIGKILL after 30 s

# Fast registration and fencing; Kafka's defaults for controller.quorum.*.
FAST_SESSION = {
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
    "group.initial.rebalance.delay.ms": "0",
}

SHARED = {"group.initial.rebalance.delay.ms": "0"}

# Api keys / versions of the raw requests.
METADATA, DESCRIBE_CLUSTER, DESCRIBE_CONFIGS = 3, 60, 32
FIND_COORDINATOR, CREATE_TOPICS, INIT_PRODUCER_ID, INCREMENTAL_ALTER_CONFIGS, DESCRIBE_QUORUM = 10, 19, 22, 44, 55
TOPIC_RESOURCE = 2

ACTIVE_RE = re.compile(r"node (\d+) is the active controller \(epoch (\d+)")
NODE_LINE_RE = re.compile(r"^node (\d+)\s+(\S+)\s+.*\bpid (\d+)\s+log (.+)$")


# -- ports and waiting ------------------------------------------------------------------


def free_port_block(n: int, avoid: tuple[range, ...] = ()) -> int:
    """The first of ``n`` consecutive ports free right now (``kbroker cluster`` lays ports out in a row).

    Below Linux's ephemeral range (32768+), so that no outgoing connection
    takes one of them before the cluster binds it.
    """
    for _ in range(500):
        base = random.randrange(20000, 32700 - n)
        if any(p in r for r in avoid for p in range(base, base + n)):
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports found")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT, interval: float = 0.2,
             state: Optional[Callable[[], Any]] = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError at the deadline.

    Exceptions from ``predicate`` (connection refused while a node starts...)
    count as "not yet"; the last one, or ``state()``, is in the message.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - "not yet"; reported at the deadline
            last = e
        if time.monotonic() > deadline:
            if state is not None:
                try:
                    last = state()
                except Exception as e:  # noqa: BLE001
                    last = f"(state unavailable: {e!r})"
            raise AssertionError(f"within {timeout:.0f}s: {what}; last seen: {last!r}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def kbroker_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kbroker", *args], env=_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


# -- one node ----------------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, since: int = 0, limit: int = 20000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text if len(text) <= limit else "...\n" + text[-limit:]


class Node:
    """One node of a cluster: started by ``kbroker cluster`` (``pid``) or by this file (``proc``)."""

    external = False  # for conftest.watch_broker

    def __init__(self, node_id: int, directory: Path, broker_port: Optional[int], controller_port: Optional[int],
                 roles: str = "broker,controller", pid: Optional[int] = None):
        self.node_id = node_id
        self.directory = Path(directory)
        self.broker_port = broker_port
        self.controller_port = controller_port
        self.roles = roles
        self.pid = pid
        self.proc: Optional[subprocess.Popen] = None
        self.host = HOST

    def __repr__(self) -> str:
        return f"<node {self.node_id} pid {self.pid} port {self.broker_port}>"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.directory / "kbroker.log"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.broker_port}"

    @property
    def port(self) -> Optional[int]:
        return self.broker_port

    def log_size(self) -> int:
        return _size(self.log_path)

    def log_text(self, since: int = 0, limit: int = 20000) -> str:
        return _tail(self.log_path, since, limit)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def start(self) -> "Node":
        """``kbroker -c DIR/node-<id>/server.properties``, its output appended to its kbroker.log."""
        assert not self.alive(), f"node {self.node_id} is already running"
        with open(self.log_path, "ab") as log:
            log.write(f"===== compat/test_cluster.py: kbroker -c {self.config_path}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "kbroker", "-c", str(self.config_path)],
                                         cwd=self.directory, env=_env(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        return self

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        if self.pid is None or not self.alive():
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if self.proc is not None:
            self.proc.wait(10)
        else:  # a child of `kbroker cluster`, which reaps it
            wait_for(lambda: not pid_alive(self.pid), f"node {self.node_id} (pid {self.pid}) gone after SIGKILL",
                     timeout=10, interval=0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM (then SIGKILL); the exit status if this file started it."""
        if self.pid is None or not self.alive():
            return self.proc.returncode if self.proc is not None else None
        os.kill(self.pid, signal.SIGTERM)
        if self.proc is not None:
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"node {self.node_id} did not exit within {timeout:.0f}s of SIGTERM")
        deadline = time.monotonic() + timeout
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        return None

    # -- what the node says, asked on its own broker listener --------------------------

    def request(self, api_key: int, version: int, body: dict, timeout: float = 10.0):
        return kraw.request(HOST, self.broker_port, api_key, version, body, timeout=timeout)

    def metadata(self, topics: Optional[list[str]] = None):
        return self.request(METADATA, 9, {
            "topics": None if topics is None else [{"name": t} for t in topics],
            "allow_auto_topic_creation": False, "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False})

    def brokers(self) -> set[tuple[int, str, int]]:
        """{(node id, host, port)} from this node's Metadata."""
        return {(b.node_id, b.host, b.port) for b in self.metadata([]).brokers}

    def topics(self, names: Optional[list[str]] = None) -> dict[str, dict[int, int]]:
        """{topic: {partition: leader}} of the topics this node knows (without errors)."""
        md = self.metadata(names)
        return {t.name: {p.partition_index: p.leader_id for p in t.partitions}
                for t in md.topics if t.error_code == 0}

    def describe_cluster(self):
        return self.request(DESCRIBE_CLUSTER, 0, {"include_cluster_authorized_operations": False})

    def topic_config(self, topic: str, key: str) -> Optional[str]:
        resp = self.request(DESCRIBE_CONFIGS, 4, {
            "resources": [{"resource_type": TOPIC_RESOURCE, "resource_name": topic, "configuration_keys": [key]}],
            "include_synonyms": False, "include_documentation": False})
        (res,) = resp.results
        assert res.error_code == 0, f"node {self.node_id}: DescribeConfigs {topic}: error {res.error_code}"
        values = {c.name: c.value for c in res.configs}
        return values.get(key)

    def create_topic_raw(self, name: str, partitions: int, timeout_ms: int = 30000) -> tuple[int, Optional[str]]:
        resp = self.request(CREATE_TOPICS, 5, {
            "topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
                        "configs": []}],
            "timeout_ms": timeout_ms, "validate_only": False}, timeout=timeout_ms / 1000 + 10)
        (t,) = resp.topics
        return t.error_code, t.error_message

    def init_producer_id(self) -> int:
        """InitProducerId (no transactional id) answered by this node: a fresh idempotent producer id."""
        resp = self.request(INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout_ms": 60000})
        assert resp.error_code == 0, f"node {self.node_id}: InitProducerId error {resp.error_code}"
        return resp.producer_id

    def describe_quorum(self, version: int = 2):
        """DescribeQuorum of __cluster_metadata-0, asked on this node's CONTROLLER listener (the partition)."""
        resp = kraw.request(HOST, self.controller_port, DESCRIBE_QUORUM, version, {
            "topics": [{"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]})
        assert resp.error_code == 0, f"node {self.node_id}: DescribeQuorum v{version} error {resp.error_code}"
        (topic,) = resp.topics
        (part,) = topic.partitions
        return part

    def active_controller_epochs(self) -> list[int]:
        """The epochs this node logged "node N is the active controller" for (N = this node)."""
        return [int(m.group(2)) for m in ACTIVE_RE.finditer(self.log_text(limit=10 ** 9))
                if int(m.group(1)) == self.node_id]


# -- waits over some nodes ---------------------------------------------------------------


def expected_brokers(nodes: list[Node]) -> set[tuple[int, str, int]]:
    return {(n.node_id, HOST, n.broker_port) for n in nodes}


def wait_brokers(asked: list[Node], expected: set, timeout: float = WAIT) -> None:
    """Until every node in ``asked`` lists exactly ``expected`` in Metadata."""
    wait_for(lambda: all(n.brokers() == expected for n in asked),
             f"nodes {[n.node_id for n in asked]} list brokers {sorted(expected)}", timeout,
             state=lambda: {n.node_id: sorted(n.brokers()) for n in asked})


def wait_topic_everywhere(asked: list[Node], name: str, partitions: int, timeout: float = WAIT,
                          led: bool = True) -> dict[int, int]:
    """Until every node shows ``name`` with ``partitions`` partitions (all led, unless ``led=False``)
    and the same leaders; the leaders."""

    def same():
        views = [n.topics([name]).get(name) for n in asked]
        first = views[0]
        if (first is None or len(first) != partitions or (led and any(leader < 0 for leader in first.values()))
                or any(v != first for v in views)):
            return None
        return first

    return wait_for(same, f"topic {name} with {partitions}{' led' if led else ''} partitions, the same on nodes "
                          f"{[n.node_id for n in asked]}", timeout,
                    state=lambda: {n.node_id: n.topics([name]).get(name) for n in asked})


def wait_topic_gone(asked: list[Node], name: str, timeout: float = WAIT) -> None:
    wait_for(lambda: all(name not in n.topics([name]) for n in asked),
             f"topic {name} gone from nodes {[n.node_id for n in asked]}", timeout,
             state=lambda: {n.node_id: n.topics([name]).get(name) for n in asked})


# -- data --------------------------------------------------------------------------------


def produce_values(bootstrap: str, topic: str, values: list[str]) -> None:
    """Produce with acks=all (idempotent librdkafka); every message delivered or AssertionError."""
    from confluent_kafka import Producer

    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": int(WAIT * 1000)})
    for i, v in enumerate(values):
        p.produce(topic, key=str(i).encode(), value=v.encode(),
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
        p.poll(0)
    left = p.flush(WAIT)
    assert left == 0, f"{left} messages to {topic} not delivered within {WAIT:.0f}s"
    assert not errors, f"delivery errors: {errors[:5]}"


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """{partition: high watermark}, asked of each partition's leader (kafka-python, no group)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      request_timeout_ms=10000)
    try:
        ends = c.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        c.close()


def read_values(bootstrap: str, topic: str, partitions: int, count: int, timeout: float = WAIT) -> list[str]:
    """Every partition from its start (assigned, no group: no coordinator needed) until ``count`` records
    or the deadline."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=10000)
    got: list[str] = []
    try:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                got.extend(r.value.decode() for r in records)
    finally:
        c.close()
    return got


def wait_data_back(bootstrap: str, topic: str, partitions: int, values: list[str], ends: dict[int, int],
                   what: str) -> None:
    """The partitions' end offsets are ``ends`` again and every value reads back."""
    wait_for(lambda: end_offsets(bootstrap, topic, partitions) == ends,
             f"{what}: the end offsets of {topic} are {ends} again",
             state=lambda: end_offsets(bootstrap, topic, partitions))
    got = read_values(bootstrap, topic, partitions, len(values))
    assert sorted(got) == sorted(values), (f"{what}: read back {len(got)} of {len(values)} messages of {topic}; "
                                           f"missing e.g. {sorted(set(values) - set(got))[:5]}")

# -- a cluster -------------------------------------------------------------------------


class Cluster:
    """``kbroker cluster`` as a child process; its nodes as :class:`Node` s."""

    external = False

    def __init__(self, workdir: Path, nodes: int = 3, controllers: Optional[int] = None,
                 overrides: Optional[dict[str, str]] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.directory = self.workdir / "cluster"
        self.n_nodes = nodes
        self.n_controllers = controllers
        self.overrides = dict(overrides or {})
        self.port = free_port_block(nodes)
        n_ctrl = controllers if controllers is not None else nodes
        self.controller_port = free_port_block(n_ctrl, avoid=(range(self.port, self.port + nodes),))
        self.log_path = self.workdir / "kbroker-cluster.out"  # the command's stdout and stderr
        self.proc: Optional[subprocess.Popen] = None
        self.nodes: dict[int, Node] = {}
        self.bootstrap = ""

    # for conftest.watch_broker (the command's own output)
    def log_size(self) -> int:
        return _size(self.log_path)

    def log_text(self, since: int = 0, limit: int = 20000) -> str:
        return _tail(self.log_path, since, limit)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "kbroker", "cluster", "--nodes", str(self.n_nodes), "--dir",
               str(self.directory), "--port", str(self.port), "--controller-port", str(self.controller_port)]
        if self.n_controllers is not None:
            cmd += ["--controllers", str(self.n_controllers)]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def start(self) -> "Cluster":
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=_env(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)

        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"kbroker cluster exited with {self.proc.returncode} during start-up:\n"
                                     f"{self.log_text()}")
            return "\nbootstrap: " in "\n" + self.log_text(limit=10 ** 9)

        deadline = time.monotonic() + START_TIMEOUT
        while not started():
            if time.monotonic() > deadline:
                raise AssertionError(f"kbroker cluster printed no bootstrap line within {START_TIMEOUT:.0f}s:\n"
                                     f"{self.log_text()}\n{self.node_logs()}")
            time.sleep(0.1)
        for line in self.log_text(limit=10 ** 9).splitlines():
            m = NODE_LINE_RE.match(line)
            if m:
                nid = int(m.group(1))
                roles = m.group(2)
                bport = re.search(r"PLAINTEXT \S+:(\d+)", line)
                cport = re.search(r"CONTROLLER \S+:(\d+)", line)
                self.nodes[nid] = Node(nid, Path(m.group(4)).parent, int(bport.group(1)) if bport else None,
                                       int(cport.group(1)) if cport else None, roles, int(m.group(3)))
            if line.startswith("bootstrap: "):
                self.bootstrap = line.split(" ", 1)[1].strip()
        expected = self.n_nodes + (self.n_controllers or 0)
        assert len(self.nodes) == expected, f"expected {expected} 'node ... pid ...' lines:\n{self.log_text()}"
        return self

    @property
    def brokers(self) -> list[Node]:
        return [n for _, n in sorted(self.nodes.items()) if n.broker_port is not None]

    def node_logs(self, limit: int = 6000) -> str:
        out = []
        for d in sorted(self.directory.glob("node-*")):
            out.append(f"--- {d / 'kbroker.log'} ---\n{_tail(d / 'kbroker.log', limit=limit)}")
        return "\n".join(out)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the command and wait for it; its exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"kbroker cluster did not exit within {timeout:.0f}s of SIGTERM")
        return self.proc.returncode

    def cleanup(self, fast: bool = False) -> None:
        """Whatever happened: no process of this cluster outlives the test.

        ``fast``: SIGKILL the nodes first (a throw-away cluster; clean stops are tested on their own).
        """
        if fast:
            for n in self.nodes.values():
                try:
                    n.kill()
                except AssertionError:
                    pass
        try:
            self.terminate()
        except AssertionError:
            pass
        for n in self.nodes.values():
            if n.alive():
                try:
                    n.stop(timeout=20)
                except AssertionError:
                    pass

    # -- cluster-wide waits (over every broker unless told) ----------------------------

    def expected_brokers(self, nodes: Optional[list[Node]] = None) -> set[tuple[int, str, int]]:
        return expected_brokers(nodes if nodes is not None else self.brokers)

    def wait_brokers(self, expected: set, asked: Optional[list[Node]] = None, timeout: float = WAIT) -> None:
        wait_brokers(asked if asked is not None else self.brokers, expected, timeout)

    def wait_topic_everywhere(self, name: str, partitions: int, asked: Optional[list[Node]] = None,
                              timeout: float = WAIT, led: bool = True) -> dict[int, int]:
        return wait_topic_everywhere(asked if asked is not None else self.brokers, name, partitions, timeout, led)

    def wait_topic_gone(self, name: str, asked: Optional[list[Node]] = None, timeout: float = WAIT) -> None:
        wait_topic_gone(asked if asked is not None else self.brokers, name, timeout)

    def active_controller(self) -> tuple[int, int]:
        """(node id, epoch) of the latest "is the active controller" line in the nodes' logs."""
        best = (-1, -1)
        for n in self.nodes.values():
            for epoch in n.active_controller_epochs():
                if epoch > best[1]:
                    best = (n.node_id, epoch)
        return best


def _watch(request, cluster: Cluster, from_start: bool = False) -> None:
    """A failing test shows the command's output and every node's log from this test on
    (``from_start``: the nodes' whole logs, for a cluster started by the test)."""
    watch_broker(request, cluster)
    for n in cluster.nodes.values():
        if from_start:  # conftest's pytest_runtest_makereport reads (broker, offset) pairs here
            request.node.__dict__.setdefault("_kbroker_logs", []).append((n, 0))
        else:
            watch_broker(request, n)


@pytest.fixture
def new_cluster(request, tmp_path):
    """Factory: a private ``kbroker cluster`` for one test, stopped (and reaped) after it."""
    made: list[Cluster] = []

    def make(nodes: int = 3, controllers: Optional[int] = None, overrides: Optional[dict[str, str]] = None,
             ) -> Cluster:
        c = Cluster(tmp_path / f"cluster-{len(made)}", nodes, controllers, overrides)
        made.append(c)
        watch_broker(request, c)
        c.start()
        _watch(request, c, from_start=True)
        return c

    yield make
    for c in made:
        c.cleanup(fast=True)


@pytest.fixture(scope="module")
def _shared_cluster(tmp_path_factory):
    clusters: list[Cluster] = []

    def get() -> Cluster:
        if not clusters or not clusters[-1].alive():
            # Kafka's session and heartbeat defaults: nothing here waits for a fencing.
            c = Cluster(tmp_path_factory.mktemp("kbroker-cluster"), 3, overrides=SHARED)
            clusters.append(c)
            c.start()
            c.wait_brokers(c.expected_brokers(), timeout=WAIT)
        return clusters[-1]

    yield get
    for c in clusters:
        c.cleanup()


@pytest.fixture
def cluster3(request, _shared_cluster) -> Cluster:
    """The shared cluster of 3 combined nodes (started again if an earlier test stopped it)."""
    c = _shared_cluster()
    _watch(request, c)
    return c


# -- 1. membership -----------------------------------------------------------------------


def test_every_node_lists_the_same_three_brokers(cluster3):
    c = cluster3
    expected = c.expected_brokers()
    assert len(expected) == 3
    c.wait_brokers(expected)

    cluster_ids = set()
    for n in c.brokers:
        md = n.metadata([])
        assert {(b.node_id, b.host, b.port) for b in md.brokers} == expected, f"node {n.node_id}"
        assert md.controller_id in {1, 2, 3}, f"node {n.node_id}: Metadata controller_id {md.controller_id}"
        cluster_ids.add(md.cluster_id)
        dc = n.describe_cluster()
        assert dc.error_code == 0, f"node {n.node_id}: DescribeCluster error {dc.error_code} {dc.error_message}"
        assert {(b.broker_id, b.host, b.port) for b in dc.brokers} == expected, f"node {n.node_id}"
        assert dc.controller_id in {1, 2, 3}, f"node {n.node_id}: DescribeCluster controller_id {dc.controller_id}"
        cluster_ids.add(dc.cluster_id)
    assert len(cluster_ids) == 1 and None not in cluster_ids, f"cluster ids differ between nodes: {cluster_ids}"
    (cluster_id,) = cluster_ids
    assert f"cluster {cluster_id}:" in c.log_text(), "the command printed another cluster id"

    # The same through the real clients, each bootstrapped at one node only.
    from confluent_kafka.admin import AdminClient
    from kafka.admin import KafkaAdminClient

    for n in c.brokers:
        admin = AdminClient({"bootstrap.servers": n.bootstrap})
        desc = admin.describe_cluster(request_timeout=WAIT).result(WAIT)
        assert desc.cluster_id == cluster_id
        assert {(b.id, b.host, b.port) for b in desc.nodes} == expected, f"confluent via node {n.node_id}"
        kp = KafkaAdminClient(bootstrap_servers=n.bootstrap, request_timeout_ms=int(WAIT * 1000))
        try:
            desc = kp.describe_cluster()
        finally:
            kp.close()
        assert desc["cluster_id"] == cluster_id
        assert {(b["broker_id"], b["host"], b["port"]) for b in desc["brokers"]} == expected, \
            f"kafka-python via node {n.node_id}"


def test_describe_quorum_on_the_controller_listeners(cluster3):
    """DescribeQuorum (what kafka-metadata-quorum.sh asks): the leader describes the quorum at every
    version it advertises; the other voters answer NOT_LEADER_OR_FOLLOWER."""
    c = cluster3
    active, epoch = wait_for(lambda: c.active_controller()[0] > 0 and c.active_controller(),
                             "a node logs that it is the active controller")
    with kraw.connect(HOST, c.nodes[1].controller_port) as sock:
        sock.sendall(kraw.api_versions_request(1))
        _corr, err, apis = kraw.parse_api_versions_v0(kraw.read_frame(sock))
    assert err == 0 and DESCRIBE_QUORUM in apis, f"DescribeQuorum not advertised on a CONTROLLER listener: {apis}"
    lo, hi = apis[DESCRIBE_QUORUM]
    problems = []
    for version in range(lo, hi + 1):
        for n in c.nodes.values():
            try:
                part = n.describe_quorum(version)
            except (ConnectionError, OSError, AssertionError) as e:
                problems.append(f"v{version} node {n.node_id}: {e}")
                continue
            if n.node_id != active:
                if part.error_code != 6:  # NOT_LEADER_OR_FOLLOWER
                    problems.append(f"v{version} node {n.node_id} (not the leader): error {part.error_code}")
                continue
            if (part.error_code, part.leader_id, part.leader_epoch) != (0, active, epoch):
                problems.append(f"v{version} leader: {part}")
            elif sorted(v.replica_id for v in part.current_voters) != [1, 2, 3] or part.observers:
                problems.append(f"v{version} leader: voters/observers {part}")
            elif part.high_watermark <= 0 or any(v.log_end_offset < 0 for v in part.current_voters):
                problems.append(f"v{version} leader: offsets {part}")
    assert not problems, "DescribeQuorum:\n" + "\n".join(problems)


def test_describe_quorum_through_any_broker(cluster3):
    """As Kafka's brokers do, each broker listener advertises DescribeQuorum and asks the active
    controller (kafka-metadata-quorum.sh --bootstrap-server, kafka-python's describe_metadata_quorum)."""
    from kafka.admin import KafkaAdminClient

    c = cluster3
    active, epoch = wait_for(lambda: c.active_controller()[0] > 0 and c.active_controller(),
                             "a node logs that it is the active controller")
    for n in c.brokers:
        admin = KafkaAdminClient(bootstrap_servers=n.bootstrap, request_timeout_ms=int(WAIT * 1000))
        try:
            described = admin.describe_metadata_quorum()
        finally:
            admin.close()
        (part,) = described["topics"][0]["partitions"]
        assert (part["leader_id"], part["leader_epoch"]) == (active, epoch), (n.node_id, part)
        assert sorted(v["replica_id"] for v in part["current_voters"]) == [1, 2, 3], (n.node_id, part)


# -- 2. admin changes made through one node show on every node ----------------------------


def test_admin_changes_through_one_node_show_on_every_node(cluster3):
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    c = cluster3
    n1, n2, n3 = (c.nodes[i] for i in (1, 2, 3))

    # CreateTopics with confluent-kafka bootstrapped at node 2 only.
    name = unique_name("cl-admin")
    admin2 = AdminClient({"bootstrap.servers": n2.bootstrap})
    admin2.create_topics([NewTopic(name, num_partitions=6, replication_factor=1)],
                         operation_timeout=WAIT, request_timeout=WAIT)[name].result(WAIT)
    leaders = c.wait_topic_everywhere(name, 6)
    assert set(leaders.values()) == {1, 2, 3}, f"6 partitions not spread over the 3 brokers: {leaders}"

    # Every node forwards a CreateTopics sent to it (raw, so that it is that node).
    per_node = {}
    for n in c.brokers:
        t = unique_name(f"cl-via{n.node_id}")
        err, msg = n.create_topic_raw(t, 3)
        assert err == 0, f"CreateTopics through node {n.node_id}: error {err} {msg}"
        per_node[n.node_id] = t
    for t in per_node.values():
        c.wait_topic_everywhere(t, 3)

    # CreatePartitions through node 1 (kafka-python sends it to the Metadata
    # controller_id of its bootstrap node).
    kp1 = KafkaAdminClient(bootstrap_servers=n1.bootstrap, request_timeout_ms=int(WAIT * 1000))
    try:
        kp1.create_partitions({name: 9}, timeout_ms=int(WAIT * 1000))
    finally:
        kp1.close()
    leaders = c.wait_topic_everywhere(name, 9)
    assert set(leaders.values()) == {1, 2, 3}

    # IncrementalAlterConfigs through node 3; DescribeConfigs asked of every node.
    kp3 = KafkaAdminClient(bootstrap_servers=n3.bootstrap, request_timeout_ms=int(WAIT * 1000))
    try:
        kp3.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                          configs={"retention.ms": ("SET", "1234567")})], incremental=True)
        wait_for(lambda: all(n.topic_config(name, "retention.ms") == "1234567" for n in c.brokers),
                 "retention.ms=1234567 on every node", state=lambda: {
                     n.node_id: n.topic_config(name, "retention.ms") for n in c.brokers})

        # DeleteTopics through node 3.
        kp3.delete_topics([name, per_node[1]], timeout_ms=int(WAIT * 1000))
    finally:
        kp3.close()
    c.wait_topic_gone(name)
    c.wait_topic_gone(per_node[1])
    # And only those: the others are still everywhere.
    for t in (per_node[2], per_node[3]):
        c.wait_topic_everywhere(t, 3)
    # A deleted name can be created again (through node 1), fresh.
    err, msg = n1.create_topic_raw(name, 2)
    assert err == 0, f"re-creating {name}: error {err} {msg}"
    c.wait_topic_everywhere(name, 2)
    assert all(n.topic_config(name, "retention.ms") != "1234567" for n in c.brokers), \
        "a re-created topic inherited the deleted one's config"


def test_auto_creation_through_every_node(cluster3):
    """Metadata that auto-creates a topic (auto.create.topics.enable, Kafka's default) through any node.

    Kafka answers a topic it has just asked the controller to create with
    LEADER_NOT_AVAILABLE (retriable) until the broker knows its partitions,
    never with "no error, no partitions": kafka-python's producer then picks a
    partition from an empty list (IndexError) instead of asking again.
    """
    from kafka import KafkaProducer

    c = cluster3
    answers = []
    for n in c.brokers:
        for i in range(3):
            name = unique_name(f"cl-auto{n.node_id}")
            md = n.request(METADATA, 9, {
                "topics": [{"name": name}], "allow_auto_topic_creation": True,
                "include_cluster_authorized_operations": False, "include_topic_authorized_operations": False})
            (t,) = md.topics
            answers.append((n.node_id, name, t.error_code, len(t.partitions)))
            c.wait_topic_everywhere(name, 1)
    wrong = [a for a in answers if not (a[2] in (3, 5) or (a[2] == 0 and a[3] == 1))]

    # A real client that auto-creates by producing, bootstrapped at each node.
    failures = []
    for n in c.brokers:
        for i in range(2):
            name = unique_name(f"cl-autokp{n.node_id}")
            producer = KafkaProducer(bootstrap_servers=n.bootstrap, acks="all",
                                     request_timeout_ms=int(WAIT * 1000), max_block_ms=int(WAIT * 1000))
            try:
                producer.send(name, b"v").get(timeout=WAIT)
            except Exception as e:  # noqa: BLE001 - collected, reported together
                failures.append((n.node_id, name, repr(e)))
            finally:
                producer.close()
    problems = []
    if wrong:
        problems.append("auto-creating Metadata answered neither the topic's partitions nor LEADER_NOT_AVAILABLE / "
                        f"UNKNOWN_TOPIC_OR_PARTITION: (node, topic, error, partitions) {wrong}")
    if failures:
        problems.append(f"kafka-python could not produce to an auto-created topic: {failures}")
    assert not problems, "\n".join(problems)


# -- 3. produce through one node, consume as a group through another ---------------------


@pytest.mark.groups
def test_produce_via_node3_consume_group_via_node1(cluster3):
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    c = cluster3
    n1, n3 = c.nodes[1], c.nodes[3]
    topic = unique_name("cl-pc")
    admin = AdminClient({"bootstrap.servers": n3.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)],
                        operation_timeout=WAIT, request_timeout=WAIT)[topic].result(WAIT)
    c.wait_topic_everywhere(topic, 6)

    old = [f"old-{i}" for i in range(300)]
    produce_values(n3.bootstrap, topic, old)

    group = unique_name("cl-group")
    conf = {"bootstrap.servers": n1.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 10000}

    def consume(consumer, count: int) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, f"consumer error: {m.error()}"
            got.append(m.value().decode())
        return got

    first = Consumer(conf)
    try:
        first.subscribe([topic])
        got = consume(first, 300)
        assert len(got) == 300 and set(got) == set(old), \
            f"first consumer: {len(got)} messages, {len(set(got))} distinct, missing {sorted(set(old) - set(got))[:5]}"
        first.commit(asynchronous=False)
        committed = first.committed([TopicPartition(topic, p) for p in range(6)], timeout=WAIT)
        assert sum(tp.offset for tp in committed) == 300, f"committed offsets: {committed}"
    finally:
        first.close()

    new = [f"new-{i}" for i in range(20)]
    produce_values(n3.bootstrap, topic, new)
    second = Consumer(conf)
    try:
        second.subscribe([topic])
        got = consume(second, 20)
        assert sorted(got) == sorted(new), f"second consumer got {len(got)}: {got[:10]}"
        # Nothing more to come: its position is the end of every partition.
        parts = [TopicPartition(topic, p) for p in range(6)]
        positions = {tp.partition: tp.offset for tp in second.position(parts)}
        ends = {p: second.get_watermark_offsets(TopicPartition(topic, p), timeout=WAIT)[1] for p in range(6)}
        assert positions == ends, f"positions {positions} != end offsets {ends}"
        assert sum(ends.values()) == 320
    finally:
        second.close()


def test_producer_ids_are_unique_across_nodes(cluster3):
    """Every broker hands out idempotent producer ids from its own block (AllocateProducerIds, decided by the
    active controller): two producers writing to one partition through different nodes never collide."""
    from confluent_kafka import Producer

    c = cluster3
    ids = [(n.node_id, n.init_producer_id()) for n in c.brokers for _ in range(3)]
    assert len({pid for _, pid in ids}) == len(ids), f"a producer id handed out twice: {ids}"

    topic = unique_name("cl-pids")
    err, msg = c.nodes[1].create_topic_raw(topic, 1)
    assert err == 0, f"CreateTopics {topic}: error {err} {msg}"
    c.wait_topic_everywhere(topic, 1)
    errors: list = []
    producers = {n.node_id: Producer({"bootstrap.servers": n.bootstrap, "acks": "all", "enable.idempotence": True,
                                      "message.timeout.ms": int(WAIT * 1000)}) for n in c.brokers}
    expected = []
    for i in range(40):  # interleaved: every producer's sequence numbers start at 0 on the same partition
        for nid, p in producers.items():
            value = f"from-{nid}-{i}"
            expected.append(value)
            p.produce(topic, value=value.encode(), partition=0,
                      on_delivery=lambda e, m: errors.append(e) if e else None)
        for p in producers.values():
            p.poll(0)
    for nid, p in producers.items():
        assert p.flush(WAIT) == 0, f"producer bootstrapped at node {nid}: messages not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    got = read_values(c.bootstrap, topic, 1, len(expected))
    assert sorted(got) == sorted(expected), \
        f"read {len(got)} of {len(expected)}; missing e.g. {sorted(set(expected) - set(got))[:5]}"


# -- 6. stopping the command (the last user of the shared cluster) --------------------


def test_sigterm_stops_every_node(cluster3):
    """Last of the shared-cluster tests: it stops the shared cluster (a later user starts a new one)."""
    c = cluster3
    pids = {nid: n.pid for nid, n in c.nodes.items()}
    assert all(pid_alive(p) for p in pids.values()), pids
    code = c.terminate()
    out = c.log_text(limit=10 ** 9)
    assert code == 0, f"kbroker cluster exit status {code}:\n{out}"
    assert "received SIGTERM" in out, out
    for nid, pid in pids.items():
        assert not pid_alive(pid), f"node {nid} (pid {pid}) outlived kbroker cluster"
        assert f"node {nid} stopped (exit status 0)" in out, f"node {nid} did not stop cleanly:\n{out}"
    for n in c.brokers:
        with pytest.raises(OSError):
            socket.create_connection((HOST, n.broker_port), timeout=2).close()


# -- 4. losing the active controller -------------------------------------------------------


def test_active_controller_sigkill_failover_and_rejoin(new_cluster):
    # Short sessions (fencing within seconds); Kafka's defaults for controller.quorum.*.
    c = new_cluster(3, overrides=FAST_SESSION)
    everyone = c.expected_brokers()
    c.wait_brokers(everyone)

    active, epoch = wait_for(lambda: c.active_controller()[0] > 0 and c.active_controller(),
                             "a node logs that it is the active controller")
    victim = c.nodes[active]
    # DescribeQuorum, asked of the active controller, agrees.
    q = victim.describe_quorum()
    assert (q.error_code, q.leader_id, q.leader_epoch) == (0, active, epoch), q
    assert sorted(v.replica_id for v in q.current_voters) == [1, 2, 3], q

    # Data on every broker (RF=1: the victim's partitions are only on the victim).
    kept = unique_name("cl-kept")
    err, msg = c.nodes[1].create_topic_raw(kept, 6)
    assert err == 0, f"CreateTopics {kept}: error {err} {msg}"
    kept_leaders = c.wait_topic_everywhere(kept, 6)
    assert set(kept_leaders.values()) == {1, 2, 3}
    kept_values = [f"kept-{i}" for i in range(120)]
    produce_values(c.bootstrap, kept, kept_values)
    kept_ends = end_offsets(c.bootstrap, kept, 6)
    assert sum(kept_ends.values()) == 120, kept_ends
    survivors = [n for n in c.brokers if n is not victim]
    pids_before = [n.init_producer_id() for n in c.brokers]
    victim.kill()
    assert not victim.alive()

    # Another node takes over (a later epoch), and admin requests work again.
    new_active, _ = wait_for(
        lambda: (lambda a: a if a[1] > epoch and a[0] != active else None)(c.active_controller()),
        f"a node other than {active} becomes the active controller after epoch {epoch}", timeout=WAIT)
    assert new_active in {n.node_id for n in survivors}

    during = unique_name("cl-during")
    asked = survivors[0]

    def created() -> bool:
        err, msg = asked.create_topic_raw(during, 4, timeout_ms=10000)
        assert err in (0, 36), f"CreateTopics through node {asked.node_id}: error {err} {msg}"  # 36: exists (a retry)
        return True

    wait_for(created, f"CreateTopics {during} through node {asked.node_id} succeeds", timeout=WAIT)
    # Placed while the dead broker is not fenced yet: some partitions may be its (leaderless once fenced).
    c.wait_topic_everywhere(during, 4, asked=survivors, led=False)

    # The dead broker is fenced: the survivors stop listing it.
    alive_set = c.expected_brokers(survivors)
    c.wait_brokers(alive_set, asked=survivors, timeout=WAIT)
    for n in survivors:
        dc = n.describe_cluster()
        assert {b.broker_id for b in dc.brokers} == {m.node_id for m in survivors}, f"node {n.node_id}"
    # Its single-replica partitions have no leader now (clients get LEADER_NOT_AVAILABLE, not a dead broker).
    orphaned = {p: (-1 if leader == victim.node_id else leader) for p, leader in kept_leaders.items()}
    wait_for(lambda: all(n.topics([kept]).get(kept) == orphaned for n in survivors),
             f"the partitions node {victim.node_id} led are leaderless on the survivors: {orphaned}",
             state=lambda: {n.node_id: n.topics([kept]).get(kept) for n in survivors})
    # New placements avoid a fenced broker.
    fenced_time = unique_name("cl-fenced")
    err, msg = survivors[1].create_topic_raw(fenced_time, 6)
    assert err == 0, f"CreateTopics through node {survivors[1].node_id}: error {err} {msg}"
    leaders = c.wait_topic_everywhere(fenced_time, 6, asked=survivors)
    assert set(leaders.values()) == {n.node_id for n in survivors}, f"placed on the fenced broker: {leaders}"

    # Restarted from the same files, the node rejoins and catches up.
    victim.start()
    c.wait_brokers(everyone, timeout=WAIT)
    c.wait_topic_everywhere(during, 4)
    c.wait_topic_everywhere(fenced_time, 6)
    # It leads its partitions again.
    wait_for(lambda: all(n.topics([kept]).get(kept) == kept_leaders for n in c.brokers),
             f"node {victim.node_id} leads its partitions of {kept} again: {kept_leaders}",
             state=lambda: {n.node_id: n.topics([kept]).get(kept) for n in c.brokers})
    after = unique_name("cl-after")
    err, msg = victim.create_topic_raw(after, 6)
    assert err == 0, f"CreateTopics through the restarted node: error {err} {msg}"
    leaders = c.wait_topic_everywhere(after, 6)
    assert set(leaders.values()) == {1, 2, 3}, f"6 partitions not spread over the 3 brokers again: {leaders}"
    # What the victim held before it was killed is still there.
    wait_data_back(c.bootstrap, kept, 6, kept_values, kept_ends, f"node {victim.node_id} restarted")
    # The new controller hands out producer id blocks after every block handed out before the failover.
    fresh = victim.init_producer_id()
    assert fresh > max(pids_before), f"restarted node {victim.node_id} hands out producer id {fresh}, " \
                                     f"not above the ids handed out before the failover {pids_before}"
    pids_after = [n.init_producer_id() for n in survivors]
    assert not set(pids_after) & set(pids_before + [fresh]), (pids_before, fresh, pids_after)


def _sigterm_and_restart(c: Cluster, pick_victim: Callable[[int], int]) -> None:
    """Data on every broker; SIGTERM one node (``pick_victim(active controller id)``): it leaves at
    once (controlled shutdown), its partitions become leaderless; restarted, it leads them again, data intact.

    The session is far longer than the waits: only a controlled shutdown can
    take the stopped broker out of Metadata in time.
    """
    c.wait_brokers(c.expected_brokers())
    active, _ = wait_for(lambda: c.active_controller()[0] > 0 and c.active_controller(),
                         "a node logs that it is the active controller")
    victim = c.nodes[pick_victim(active)]
    survivors = [n for n in c.brokers if n is not victim]
    topic = unique_name("cl-clean")
    err, msg = survivors[0].create_topic_raw(topic, 6)
    assert err == 0, f"CreateTopics {topic}: error {err} {msg}"
    leaders = c.wait_topic_everywhere(topic, 6)
    assert set(leaders.values()) == {1, 2, 3}
    values = [f"clean-{i}" for i in range(120)]
    produce_values(c.bootstrap, topic, values)
    ends = end_offsets(c.bootstrap, topic, 6)
    assert sum(ends.values()) == 120, ends

    victim.stop()
    wait_for(lambda: f"node {victim.node_id} exited unexpectedly (exit status 0)" in c.log_text(limit=10 ** 9),
             f"kbroker cluster reports node {victim.node_id} exited with status 0 after SIGTERM",
             state=lambda: c.log_text(limit=3000))
    c.wait_brokers(c.expected_brokers(survivors), asked=survivors, timeout=WAIT)
    orphaned = {p: (-1 if leader == victim.node_id else leader) for p, leader in leaders.items()}
    wait_for(lambda: all(n.topics([topic]).get(topic) == orphaned for n in survivors),
             f"the partitions node {victim.node_id} led are leaderless on the survivors: {orphaned}",
             state=lambda: {n.node_id: n.topics([topic]).get(topic) for n in survivors})

    victim.start()
    c.wait_brokers(c.expected_brokers())
    wait_for(lambda: all(n.topics([topic]).get(topic) == leaders for n in c.brokers),
             f"node {victim.node_id} leads its partitions of {topic} again: {leaders}",
             state=lambda: {n.node_id: n.topics([topic]).get(topic) for n in c.brokers})
    wait_data_back(c.bootstrap, topic, 6, values, ends, f"node {victim.node_id} restarted after SIGTERM")


def test_sigterm_of_a_broker_controlled_shutdown_and_restart_keep_data(new_cluster):
    """A node that is not the active controller, stopped with SIGTERM."""
    c = new_cluster(3, overrides={**FAST_SESSION, "broker.session.timeout.ms": "120000"})
    _sigterm_and_restart(c, lambda active: max(nid for nid in c.nodes if nid != active))


def test_sigterm_of_the_active_controller_controlled_shutdown_and_restart_keep_data(new_cluster):
    """The active controller's own broker, stopped with SIGTERM, is fenced at once too.

    As in Kafka, where a combined node's broker shuts down (controlled
    shutdown, acknowledged by the active controller) before its controller
    does: a rolling restart must not leave clients sent to a dead broker for
    a whole broker.session.timeout.ms.
    """
    c = new_cluster(3, overrides={**FAST_SESSION, "broker.session.timeout.ms": "120000"})
    _sigterm_and_restart(c, lambda active: active)


@pytest.mark.groups
def test_group_offsets_survive_a_sigkill_of_the_coordinator(new_cluster):
    """The group coordinator is the leader of the group's __consumer_offsets partition: SIGKILLed and
    restarted, it loads the group again and the committed offsets hold."""
    from confluent_kafka import Consumer, TopicPartition

    c = new_cluster(3, overrides=FAST_SESSION)
    c.wait_brokers(c.expected_brokers())
    topic = unique_name("cl-grp")
    err, msg = c.nodes[1].create_topic_raw(topic, 6)
    assert err == 0, f"CreateTopics {topic}: error {err} {msg}"
    c.wait_topic_everywhere(topic, 6)
    old = [f"old-{i}" for i in range(60)]
    produce_values(c.bootstrap, topic, old)

    group = unique_name("cl-grp-g")
    conf = {"bootstrap.servers": c.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 10000}

    def consume(count: int) -> list[str]:
        consumer = Consumer(conf)
        got: list[str] = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            while len(got) < count and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is None:
                    continue
                assert m.error() is None, f"consumer error: {m.error()}"
                got.append(m.value().decode())
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return got

    got = consume(60)
    assert sorted(got) == sorted(old), f"first consumer read {len(got)} of 60"

    def coordinator() -> int:
        r = c.nodes[1].request(FIND_COORDINATOR, 1, {"key": group, "key_type": 0})
        assert r.error_code == 0, f"FindCoordinator: error {r.error_code}"
        return r.node_id

    victim = c.nodes[wait_for(coordinator, f"the coordinator of {group}")]
    survivors = [n for n in c.brokers if n is not victim]
    victim.kill()
    c.wait_brokers(c.expected_brokers(survivors), asked=survivors)
    victim.start()
    c.wait_brokers(c.expected_brokers())
    assert wait_for(coordinator, f"the coordinator of {group} after the restart") == victim.node_id

    probe = Consumer(conf)
    try:
        committed = wait_for(lambda: probe.committed([TopicPartition(topic, p) for p in range(6)], timeout=10),
                             f"the committed offsets of {group}")
    finally:
        probe.close()
    assert sum(tp.offset for tp in committed) == 60, f"committed offsets after the coordinator's restart: {committed}"
    new = [f"new-{i}" for i in range(10)]
    produce_values(c.bootstrap, topic, new)
    got = consume(10)
    assert sorted(got) == sorted(new), f"after the coordinator's restart the group read {got}"


# -- 5. a node of another cluster ----------------------------------------------------------


def test_node_with_another_cluster_id_is_not_admitted(tmp_path, request):
    """Nodes 1 and 2 formatted for cluster A, node 3 (same voters) for cluster B.

    Kafka's answer: the quorum refuses node 3's Raft requests with
    INCONSISTENT_CLUSTER_ID and its BrokerRegistration too; node 3 never
    becomes a broker of cluster A, and says why in its log.
    """
    from kbroker import localcluster

    base = free_port_block(3)
    cbase = free_port_block(3, avoid=(range(base, base + 3),))
    plan = localcluster.plan(3, None, str(tmp_path / "cluster"), base, cbase,
                             [f"{k}={v}" for k, v in FAST_SESSION.items()])
    localcluster.write_properties(plan)

    ids = []
    for _ in range(2):
        r = kbroker_cli("random-uuid")
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip())
    cluster_a, cluster_b = ids
    assert cluster_a != cluster_b
    nodes = []
    for spec in plan.nodes:
        cid = cluster_b if spec.node_id == 3 else cluster_a
        r = kbroker_cli("format", "-t", cid, "-c", spec.config_path)
        assert r.returncode == 0, f"kbroker format node {spec.node_id}: {r.stdout}{r.stderr}"
        nodes.append(Node(spec.node_id, Path(spec.directory), spec.broker_port, spec.controller_port))
    n1, n2, n3 = nodes
    for n in nodes:
        watch_broker(request, n)
    try:
        for n in nodes:
            n.start()
        healthy = [n1, n2]
        wait_brokers(healthy, expected_brokers(healthy))
        for n in healthy:
            assert n.describe_cluster().cluster_id == cluster_a

        # The healthy majority works: a topic is created and placed on 1 and 2 only.
        t = unique_name("cl-two")
        err, msg = n2.create_topic_raw(t, 4)
        assert err == 0, f"CreateTopics: error {err} {msg}"
        leaders = wait_topic_everywhere(healthy, t, 4)
        assert set(leaders.values()) <= {1, 2}

        # Node 3 says, in its log (or has exited saying), that its cluster id is not the cluster's.
        said = re.compile(r"inconsistent.?cluster.?id|cluster.?id.{0,80}(inconsistent|mismatch|does not match|differ)",
                          re.IGNORECASE)

        listing_3 = []  # meanwhile, node 3 is never a broker of cluster A

        def node3_says_why() -> bool:
            listing_3.extend(n.node_id for n in healthy if 3 in {b[0] for b in n.brokers()})
            return bool(said.search(n3.log_text(limit=10 ** 9)))

        wait_for(node3_says_why, "node 3 logs that its cluster id is inconsistent with the quorum's",
                 timeout=WAIT, interval=0.5, state=lambda: ("alive" if n3.alive() else f"exited {n3.proc.returncode}",
                                                            n3.log_text(limit=3000)))
        assert not listing_3, f"nodes {sorted(set(listing_3))} listed node 3 of another cluster as a broker"
        if not n3.alive():
            assert n3.proc.returncode != 0, "node 3 exited with status 0 although it could not join"
        for n in healthy:
            assert 3 not in {b[0] for b in n.brokers()}
            assert n.alive(), f"node {n.node_id} died"
    finally:
        for n in nodes:
            n.kill()


# -- 7. separate controller and broker nodes ----------------------------------------------


@pytest.mark.groups
def test_one_controller_three_brokers(new_cluster):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    c = new_cluster(3, controllers=1, overrides=FAST_SESSION)
    assert sorted(c.nodes) == [1, 2, 3, 4]
    assert c.nodes[1].broker_port is None and c.nodes[1].roles == "controller"
    brokers = c.brokers
    assert [n.node_id for n in brokers] == [2, 3, 4]
    c.wait_brokers(c.expected_brokers())
    for n in brokers:
        dc = n.describe_cluster()
        assert {b.broker_id for b in dc.brokers} == {2, 3, 4}, f"node {n.node_id}"
    # The controller-only node has no broker listener.
    assert c.bootstrap == ",".join(n.bootstrap for n in brokers)

    topic = unique_name("cl-shape")
    admin = AdminClient({"bootstrap.servers": brokers[0].bootstrap})  # alive until the result is in
    admin.create_topics(
        [NewTopic(topic, num_partitions=6, replication_factor=1)],
        operation_timeout=WAIT, request_timeout=WAIT)[topic].result(WAIT)
    leaders = c.wait_topic_everywhere(topic, 6)
    assert set(leaders.values()) == {2, 3, 4}, f"partitions not spread over the 3 brokers: {leaders}"

    errors = []
    p = Producer({"bootstrap.servers": brokers[2].bootstrap, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": int(WAIT * 1000)})
    for i in range(100):
        p.produce(topic, key=str(i).encode(), value=f"v-{i}".encode(),
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(WAIT) == 0 and not errors, errors[:5]

    consumer = Consumer({"bootstrap.servers": brokers[1].bootstrap, "group.id": unique_name("cl-shape-g"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 100 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, f"consumer error: {m.error()}"
            got.append(m.value().decode())
        assert sorted(got) == sorted(f"v-{i}" for i in range(100)), f"got {len(got)}"
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def test_one_controller_three_brokers_restarts(new_cluster):
    """Without its only controller the brokers keep serving their partitions and answer what needs the
    controller with retriable errors; the restarted controller finds them registered; a restarted
    broker-only node (a Raft observer) catches up and keeps its data."""
    from concurrent.futures import ThreadPoolExecutor

    from confluent_kafka import Producer

    c = new_cluster(3, controllers=1, overrides=FAST_SESSION)
    controller = c.nodes[1]
    b2, b3, b4 = (c.nodes[i] for i in (2, 3, 4))
    c.wait_brokers(c.expected_brokers())
    topic = unique_name("cl-shape-r")
    err, msg = b2.create_topic_raw(topic, 6)
    assert err == 0, f"CreateTopics {topic}: error {err} {msg}"
    leaders = c.wait_topic_everywhere(topic, 6)
    assert set(leaders.values()) == {2, 3, 4}
    # Not idempotent: no broker asks the controller for producer ids.
    first = [f"a-{i}" for i in range(60)]
    errors: list = []
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": False,
                  "message.timeout.ms": int(WAIT * 1000)})
    for v in first:
        p.produce(topic, value=v.encode(), on_delivery=lambda e, m: errors.append(e) if e else None)
    assert p.flush(WAIT) == 0 and not errors, f"produce: {errors[:5]}"

    # The controller goes.  Nothing has asked for a group coordinator yet (no
    # __consumer_offsets), and no broker holds producer ids to hand out.
    controller.kill()
    problems = []

    def find_coordinator():
        t0 = time.monotonic()
        r = b3.request(FIND_COORDINATOR, 1, {"key": unique_name("cl-g"), "key_type": 0}, timeout=60)
        return r.error_code, time.monotonic() - t0

    def init_producer_id():
        try:
            r = b4.request(INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout_ms": 60000},
                           timeout=60)
            return r.error_code
        except ConnectionError as e:
            return e

    with ThreadPoolExecutor(2) as pool:
        fc, ip = pool.submit(find_coordinator), pool.submit(init_producer_id)
        (fc_error, fc_seconds), ip_answer = fc.result(), ip.result()
    # Kafka answers at once (COORDINATOR_NOT_AVAILABLE: the internal topic is
    # created asynchronously); a broker that waits for an unreachable
    # controller holds up every later request on that connection (Fetches).
    if fc_error != 15 or fc_seconds > 15:
        problems.append(f"FindCoordinator without a controller: error {fc_error} after {fc_seconds:.1f}s "
                        f"(expected COORDINATOR_NOT_AVAILABLE at once)")
    if not isinstance(ip_answer, int):
        problems.append(f"InitProducerId on a broker without producer ids and without a controller: {ip_answer!r} "
                        f"(expected a retriable error code)")

    # Data still flows through the brokers (reads need no coordinator).
    second = [f"b-{i}" for i in range(60)]
    for v in second:
        p.produce(topic, value=v.encode(), on_delivery=lambda e, m: errors.append(e) if e else None)
    assert p.flush(WAIT) == 0 and not errors, f"produce without a controller: {errors[:5]}"
    got = read_values(c.bootstrap, topic, 6, 120)
    assert sorted(got) == sorted(first + second), f"read {len(got)} of 120 without a controller"

    # It comes back: the brokers are still there and admin requests work again.
    controller.start()
    c.wait_brokers(c.expected_brokers())
    assert c.wait_topic_everywhere(topic, 6) == leaders
    after = unique_name("cl-shape-after")
    wait_for(lambda: b4.create_topic_raw(after, 3)[0] in (0, 36),  # 36: a retry found it created
             f"CreateTopics {after} through node 4 once the controller is back")
    assert set(c.wait_topic_everywhere(after, 3).values()) <= {2, 3, 4}
    ends = end_offsets(c.bootstrap, topic, 6)

    # A broker-only node is killed and restarted: fenced meanwhile, back with its data.
    b3.kill()
    c.wait_brokers(c.expected_brokers([b2, b4]), asked=[b2, b4])
    during = unique_name("cl-shape-during")
    err, msg = b2.create_topic_raw(during, 4)
    assert err == 0, f"CreateTopics {during}: error {err} {msg}"
    assert set(wait_topic_everywhere([b2, b4], during, 4).values()) <= {2, 4}
    b3.start()
    c.wait_brokers(c.expected_brokers())
    c.wait_topic_everywhere(during, 4)
    assert c.wait_topic_everywhere(topic, 6) == leaders
    wait_data_back(c.bootstrap, topic, 6, first + second, ends, "broker-only node 3 restarted")
    assert not problems, "\n".join(problems)


# -- 8. catching up from a metadata snapshot ---------------------------------------------


def test_restarted_node_catches_up_after_1000_changes_through_a_snapshot(new_cluster):
    c = new_cluster(3, overrides={**FAST_SESSION, "metadata.log.max.record.bytes.between.snapshots": "4096"})
    c.wait_brokers(c.expected_brokers())
    active, _ = wait_for(lambda: c.active_controller()[0] > 0 and c.active_controller(),
                         "a node logs that it is the active controller")
    # A node that is not the active controller goes down (the quorum keeps its majority).
    victim = c.nodes[max(nid for nid in c.nodes if nid != active)]
    survivors = [n for n in c.brokers if n is not victim]
    via = survivors[0]

    topics = [unique_name(f"cl-snap{i}") for i in range(10)]
    for t in topics:
        err, msg = via.create_topic_raw(t, 3)
        assert err == 0, f"CreateTopics {t}: error {err} {msg}"
    doomed = unique_name("cl-doomed")
    err, msg = via.create_topic_raw(doomed, 3)
    assert err == 0, f"CreateTopics {doomed}: error {err} {msg}"
    for t in topics + [doomed]:
        assert set(c.wait_topic_everywhere(t, 3).values()) == {1, 2, 3}
    # Data on every broker, the victim's only on the victim (RF=1).
    data = {t: [f"{t}-{i}" for i in range(30)] for t in topics[:3]}
    ends = {}
    for t, values in data.items():
        produce_values(c.bootstrap, t, values)
        ends[t] = end_offsets(c.bootstrap, t, 3)

    victim.kill()
    # Where the victim's metadata log ended, as the leader saw it.
    q = c.nodes[active].describe_quorum()
    assert q.error_code == 0 and q.leader_id == active, q
    (victim_end,) = [v.log_end_offset for v in q.current_voters if v.replica_id == victim.node_id]
    assert victim_end > 0, q

    # 1,000 changes while it is down: 100 IncrementalAlterConfigs of 10 topics each,
    # half through each survivor; then more topics, and one deleted.
    final = {}
    socks = {n.node_id: kraw.connect(HOST, n.broker_port, timeout=WAIT) for n in survivors}
    try:
        for round_ in range(100):
            n = survivors[round_ % 2]
            values = {t: str(3_600_000 + round_ * 10 + i) for i, t in enumerate(topics)}
            resp = kraw.call(socks[n.node_id], INCREMENTAL_ALTER_CONFIGS, 1, {
                "resources": [{"resource_type": TOPIC_RESOURCE, "resource_name": t, "configs": [
                    {"name": "retention.ms", "config_operation": 0, "value": v}]} for t, v in values.items()],
                "validate_only": False}, correlation_id=round_ + 1)
            bad = [(r.resource_name, r.error_code, r.error_message) for r in resp.responses if r.error_code != 0]
            assert not bad, f"IncrementalAlterConfigs round {round_} through node {n.node_id}: {bad}"
            final = values
    finally:
        for s in socks.values():
            s.close()
    later = [unique_name(f"cl-later{i}") for i in range(5)]
    for t in later:
        err, msg = survivors[1].create_topic_raw(t, 2)
        assert err == 0, f"CreateTopics {t}: error {err} {msg}"
    from kafka.admin import KafkaAdminClient

    # kafka-python's admin client sends its first request to any listed broker and gives up on a
    # refused connection: wait until the survivors have fenced (and stopped listing) the victim.
    c.wait_brokers(c.expected_brokers(survivors), asked=survivors, timeout=WAIT)
    kp = KafkaAdminClient(bootstrap_servers=via.bootstrap, request_timeout_ms=int(WAIT * 1000))
    try:
        kp.delete_topics([doomed], timeout_ms=int(WAIT * 1000))
    finally:
        kp.close()
    wait_topic_gone(survivors, doomed)
    for t in later:  # placed on the victim too if it was not fenced yet: leaderless then
        wait_topic_everywhere(survivors, t, 2, led=False)
    q_after = c.nodes[active].describe_quorum()
    assert q_after.high_watermark - q.high_watermark >= 1000, \
        f"fewer than 1,000 metadata records committed: high watermark {q.high_watermark} -> {q_after.high_watermark}"
    # The survivors snapshotted, past the victim's end: the leader's log no longer
    # holds what the victim misses, so only a snapshot (FetchSnapshot) can bring it back.
    for n in survivors:
        snaps = [int(f.name.split("-")[0]) for f in (n.directory / "data" / "__cluster_metadata-0").glob("*.checkpoint")]
        assert snaps, f"node {n.node_id} wrote no metadata snapshot after 1,000 changes"
        assert max(snaps) > victim_end, f"node {n.node_id}: snapshots at {snaps}, the victim's log ended at {victim_end}"

    victim.start()
    c.wait_brokers(c.expected_brokers(), timeout=WAIT)
    for t in later:
        c.wait_topic_everywhere(t, 2)
    c.wait_topic_gone(doomed)
    for t in topics:
        c.wait_topic_everywhere(t, 3)
    wait_for(lambda: all(victim.topic_config(t, "retention.ms") == v for t, v in final.items()),
             f"node {victim.node_id} sees the last of the 1,000 config changes",
             state=lambda: {t: victim.topic_config(t, "retention.ms") for t in topics})
    checkpoints = list((victim.directory / "data" / "__cluster_metadata-0").glob("*.checkpoint"))
    assert checkpoints, f"no metadata snapshot under node {victim.node_id}'s __cluster_metadata-0"
    # The log of the topic deleted while it was down goes too (a snapshot has no RemoveTopicRecord to replay).
    wait_for(lambda: not [d.name for d in (victim.directory / "data").glob(f"{doomed}-*")
                          if not d.name.endswith("-delete")],
             f"node {victim.node_id} drops its log of {doomed}, deleted while it was down",
             state=lambda: sorted(d.name for d in (victim.directory / "data").glob(f"{doomed}-*")))
    # What the victim held before it was killed is still there.
    for t, values in data.items():
        wait_data_back(c.bootstrap, t, 3, values, ends[t], f"node {victim.node_id} caught up from a snapshot")


def test_metadata_log_dir_holds_the_metadata_log(tmp_path, request):
    """``metadata.log.dir`` outside ``log.dirs`` (Kafka's KRaft setting): the metadata log, its
    quorum-state and meta.properties live there, no partition log does, and a restart reads it."""
    from kbroker import localcluster

    base = free_port_block(2)
    cbase = free_port_block(2, avoid=(range(base, base + 2),))
    plan = localcluster.plan(2, None, str(tmp_path / "cluster"), base, cbase,
                             [f"{k}={v}" for k, v in FAST_SESSION.items()])
    localcluster.write_properties(plan)
    r = kbroker_cli("random-uuid")
    assert r.returncode == 0, r.stderr
    nodes = []
    for spec in plan.nodes:
        with open(spec.config_path, "a") as f:
            f.write(f"metadata.log.dir={Path(spec.directory) / 'meta'}\n")
        f = kbroker_cli("format", "-t", r.stdout.strip(), "-c", spec.config_path)
        assert f.returncode == 0, f"kbroker format node {spec.node_id}: {f.stdout}{f.stderr}"
        nodes.append(Node(spec.node_id, Path(spec.directory), spec.broker_port, spec.controller_port))
    for n in nodes:
        watch_broker(request, n)
    try:
        for n in nodes:
            n.start()
        wait_brokers(nodes, expected_brokers(nodes))
        t = unique_name("cl-mdir")
        err, msg = nodes[1].create_topic_raw(t, 4)
        assert err == 0, f"CreateTopics: error {err} {msg}"
        wait_topic_everywhere(nodes, t, 4)
        for n in nodes:
            meta = n.directory / "meta"
            assert (meta / "__cluster_metadata-0" / "quorum-state").is_file(), sorted(meta.rglob("*"))
            assert (meta / "meta.properties").is_file()
            assert not list(meta.glob(f"{t}-*")), "a partition log in metadata.log.dir"
            assert not list(n.directory.glob("data/__cluster_metadata-*")), "the metadata log in log.dirs"
            assert list(n.directory.glob(f"data/{t}-*")), "no partition log in log.dirs"
        for n in nodes:
            assert n.stop() == 0
        for n in nodes:
            n.start()
        wait_brokers(nodes, expected_brokers(nodes))
        wait_topic_everywhere(nodes, t, 4)
    finally:
        for n in nodes:
            n.kill()
