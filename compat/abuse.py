"""Shared helpers of the abuse suite (test_abuse.py) and the crash-point tests.

* The **catalogue**: every abuse case records its name, whether the broker
  survived (alive and answering a new connection at the end), how many
  records/commits/topics were acknowledged and how many of those were lost,
  and the numbers it measured (RSS, probe latency).  ``conftest.py`` prints it
  at the end of the run.
* A **probe**: a thread that keeps asking ApiVersions and Metadata on its own
  connection while a case runs, and remembers the worst latency and every
  failure.  "Another client keeps getting answers" is what it checks.
* **Process numbers** from ``/proc/<pid>``: RSS, peak RSS (resettable), open
  descriptors.
* **Raw requests** (through :mod:`compat.kraw`) for what the cases need
  precisely: produce a hand-made batch, fetch with exact limits, list offsets,
  create topics, commit and fetch offsets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from compat import kraw

# How long another client may wait for an answer while a case runs.  The issue asks for
# 1 s; a 2-core CI box with a CPU hog beside the suite (and this test process busy
# writing megabytes) adds scheduling delays of tens of milliseconds, not hundreds, so
# 1 s stays a meaningful bound that a correct broker meets with a wide margin.
PROBE_LIMIT = 1.0
WAIT = 10.0  # seconds the broker gets to answer (or close) a hostile request

# API keys and the versions used here (all served by kbroker and Kafka 4).
PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS = 18, 19, 20
INCREMENTAL_ALTER_CONFIGS = 44
V = {PRODUCE: 9, FETCH: 12, LIST_OFFSETS: 7, METADATA: 9, OFFSET_COMMIT: 8, OFFSET_FETCH: 7,
     FIND_COORDINATOR: 3, CREATE_TOPICS: 5, DELETE_TOPICS: 4, INCREMENTAL_ALTER_CONFIGS: 1}

# Error codes
NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INVALID_TOPIC_EXCEPTION = 17
TOPIC_ALREADY_EXISTS = 36
POLICY_VIOLATION = 44
KAFKA_STORAGE_ERROR = 56
INVALID_RECORD = 87
RETRIABLE_COORDINATOR = {COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR}


# -- the catalogue ------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    survived: Optional[bool] = None  # alive and answering a new connection at the end
    passed: bool = False  # every check of the case held
    acked: int = 0  # records / commits / topics the broker acknowledged
    lost: int = 0  # ... and that were not read back
    notes: dict[str, Any] = field(default_factory=dict)

    def note(self, **numbers: Any) -> None:
        self.notes.update(numbers)


CATALOGUE: list[Case] = []


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def catalogue_lines() -> list[str]:
    """The table printed at the end of a run (empty if no abuse case ran)."""
    if not CATALOGUE:
        return []
    survived = sum(1 for c in CATALOGUE if c.survived)
    lost = sum(c.lost for c in CATALOGUE)
    failed = sum(1 for c in CATALOGUE if not c.passed)
    lines = [f"abuse catalogue: {len(CATALOGUE)} cases, {survived} survived, lost {lost}"
             + (f", {failed} with failed checks" if failed else "")]
    width = max(len(c.name) for c in CATALOGUE)
    for c in CATALOGUE:
        verdict = "ok  " if c.passed else "FAIL"
        alive = {True: "survived", False: "DIED    ", None: "?       "}[c.survived]
        notes = " ".join(f"{k}={_fmt(v)}" for k, v in c.notes.items())
        lines.append(f"  {verdict} {c.name:<{width}}  {alive}  acked={c.acked} lost={c.lost}  {notes}")
    return lines


# -- process numbers ----------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_mb(pid: int) -> float:
    """Peak RSS since the process started or since :func:`reset_peak`."""
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(cond, timeout: float, what: str, interval: float = 0.02):
    """Poll ``cond()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_stable(sample, timeout: float, quiet: float = 1.0) -> float:
    """Sample a growing number until it has not grown for ``quiet`` seconds
    (or ``timeout`` passes); return the largest value seen."""
    deadline = time.monotonic() + timeout
    best = sample()
    since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.05)
        v = sample()
        if v > best * 1.01 + 1:
            best, since = v, time.monotonic()
        best = max(best, v)
    return best


# -- the probe ----------------------------------------------------------------------------


class Probe:
    """Another client: ApiVersions and Metadata, one at a time, on its own connection.

    ``source``: the local address to connect from (127.0.0.2 keeps the probe out
    of a per-IP connection limit on 127.0.0.1).  A request that is not answered
    within ``timeout`` seconds, or a closed connection, is a failure; the
    probe reconnects and goes on (the connect time counts as latency).
    """

    def __init__(self, host: str, port: int, source: Optional[str] = None, interval: float = 0.05,
                 timeout: float = WAIT):
        self.host, self.port, self.source = host, port, source
        self.interval, self.timeout = interval, timeout
        self.worst = 0.0
        self.count = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="abuse-probe", daemon=True)
        self._sock: Optional[socket.socket] = None
        self._answered = threading.Event()

    def start(self) -> "Probe":
        """Start probing; returns once the first answer arrived (the probe's connection is open)."""
        self._thread.start()
        if not self._answered.wait(self.timeout):
            raise AssertionError(f"the probe got no answer within {self.timeout}s: {self.failures[:1]}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        self._close()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Suspend probing (while the test restarts the broker on purpose)."""
        self._idle.clear()
        self._paused.set()
        self._idle.wait(self.timeout + 5)
        self._close()
        try:
            yield
        finally:
            self._paused.clear()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        if self.source:
            sock.bind((self.source, 0))
        sock.connect((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _run(self) -> None:
        corr = 0
        while not self._stop.is_set():
            if self._paused.is_set():
                self._idle.set()
                self._stop.wait(0.02)
                continue
            corr += 1
            t0 = time.monotonic()
            try:
                if self._sock is None:
                    self._sock = self._connect()
                req = kraw.api_versions_request(corr) if corr % 2 else kraw.metadata_request(corr, [])
                self._sock.sendall(req)
                frame = kraw.read_frame(self._sock)
                if frame is None:
                    raise ConnectionError("closed by the broker")
                got = struct.unpack_from(">i", frame)[0]
                if got != corr:
                    raise AssertionError(f"correlation id {got}, expected {corr}")
                self._answered.set()
            except (OSError, ValueError, AssertionError, struct.error) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                self._close()
            latency = time.monotonic() - t0
            self.worst = max(self.worst, latency)
            self.count += 1
            self._stop.wait(self.interval)


def answers(host: str, port: int, timeout: float = 5.0) -> bool:
    """A new connection gets an ApiVersions answer."""
    try:
        with kraw.connect(host, port, timeout) as sock:
            sock.sendall(kraw.api_versions_request(99))
            frame = kraw.read_frame(sock)
            return frame is not None and struct.unpack_from(">i", frame)[0] == 99
    except (OSError, ValueError, struct.error):
        return False


@contextlib.contextmanager
def abuse_case(name: str, broker, *, probe: bool = True, probe_source: Optional[str] = None,
               probe_limit: float = PROBE_LIMIT) -> Iterator[Case]:
    """Run one catalogued case against ``broker`` with a probe beside it.

    On a normal exit it checks the common verdict: the broker process is
    alive, a new connection is answered, the probe never failed and never
    waited longer than ``probe_limit``, and the case lost nothing
    (``case.lost``, which the test sets).  ``case.probe`` is the Probe, so a
    test can pause it around a deliberate restart.
    """
    case = Case(name)
    CATALOGUE.append(case)
    p = Probe(broker.host, broker.port, source=probe_source).start() if probe else None
    case.probe = p  # type: ignore[attr-defined]
    ok = False
    try:
        yield case
        ok = True
    finally:
        if p is not None:
            p.stop()
            case.note(probe_worst_s=round(p.worst, 3), probes=p.count)
            if p.failures:
                case.note(probe_failures=len(p.failures))
        case.survived = bool(broker.alive() and answers(broker.host, broker.port))
    assert broker.alive(), f"{name}: the broker process died (exit code {broker.proc.returncode})"
    assert case.survived, f"{name}: the broker no longer answers a new connection"
    if p is not None:
        assert not p.failures, f"{name}: the probe failed {len(p.failures)} times, first: {p.failures[0]}"
        assert p.worst <= probe_limit, f"{name}: another client waited {p.worst:.2f}s (limit {probe_limit}s)"
    assert case.lost == 0, f"{name}: {case.lost} acknowledged items lost"
    case.passed = ok


# -- raw requests -------------------------------------------------------------------------


def batch(values: list[bytes], key: Optional[bytes] = None, timestamps: Optional[list[int]] = None,
          **kw: Any) -> bytes:
    """One v2 record batch (no compression) holding ``values``."""
    from protocol.records import encode_batch

    ts = timestamps or [None] * len(values)
    return encode_batch([(key, v, (), t) for v, t in zip(values, ts)], **kw)


def produce(sock: socket.socket, topic: str, partition: int, records: bytes, acks: int = -1,
            correlation_id: int = 1) -> tuple[int, int]:
    """Produce one partition's records; (error_code, base_offset)."""
    body = {"transactional_id": None, "acks": acks, "timeout_ms": 30000,
            "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": records}]}]}
    ans = kraw.call(sock, PRODUCE, V[PRODUCE], body, correlation_id)
    pr = ans.responses[0].partition_responses[0]
    return pr.error_code, pr.base_offset


def fetch_body(topic: str, partitions: list[int], offset: int = 0, max_bytes: int = 50 << 20,
               partition_max_bytes: int = 50 << 20, max_wait_ms: int = 0, min_bytes: int = 0) -> dict:
    return {"replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": min_bytes, "max_bytes": max_bytes,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [
                {"partition": p, "current_leader_epoch": -1, "fetch_offset": offset, "last_fetched_epoch": -1,
                 "log_start_offset": -1, "partition_max_bytes": partition_max_bytes} for p in partitions]}],
            "forgotten_topics_data": [], "rack_id": ""}


def records_of(data) -> list:
    """Decoded records (protocol.records.Record, absolute offsets) of a fetched records field;
    a partial batch at the end (allowed in a Fetch answer) is left out."""
    from protocol.records import decode_batch, split_batches_lenient

    if not data:
        return []
    view = memoryview(bytes(data))
    out = []
    for pos, _ in split_batches_lenient(view)[0]:
        out.extend(decode_batch(view, pos)[1])
    return out


def read_partition(host: str, port: int, topic: str, partition: int = 0, start: int = 0,
                   timeout: float = 30.0) -> tuple[dict[int, Any], int, int]:
    """Every record from ``start`` (or the log start) to the high watermark:
    ({offset: Record}, high_watermark, log_start_offset)."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    offset = start
    with kraw.connect(host, port, timeout) as sock:
        while True:
            ans = kraw.call(sock, FETCH, V[FETCH], fetch_body(topic, [partition], offset, 8 << 20, 8 << 20))
            pd = ans.responses[0].partitions[0]
            if pd.error_code == 1:  # OFFSET_OUT_OF_RANGE: start below the log start
                offset = list_offset(sock, topic, partition, -2)
                continue
            assert pd.error_code == 0, f"fetch {topic}-{partition}@{offset}: error {pd.error_code}"
            recs = records_of(pd.records)
            for r in recs:
                if r.offset >= offset:
                    got[r.offset] = r
            if recs:
                offset = max(offset, recs[-1].offset + 1)
            if offset >= pd.high_watermark or (not recs and offset < pd.log_start_offset):
                if offset < pd.log_start_offset:
                    offset = pd.log_start_offset
                    continue
                return got, pd.high_watermark, pd.log_start_offset
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic}-{partition} to {pd.high_watermark} in {timeout}s")


def list_offset(sock: socket.socket, topic: str, partition: int, timestamp: int = -1) -> int:
    """ListOffsets: -1 latest (the high watermark), -2 earliest."""
    body = {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": partition, "current_leader_epoch": -1,
                                         "timestamp": timestamp}]}]}
    ans = kraw.call(sock, LIST_OFFSETS, V[LIST_OFFSETS], body)
    p = ans.topics[0].partitions[0]
    assert p.error_code == 0, f"ListOffsets {topic}-{partition}: error {p.error_code}"
    return p.offset


def high_watermark(host: str, port: int, topic: str, partition: int = 0) -> int:
    with kraw.connect(host, port) as sock:
        return list_offset(sock, topic, partition, -1)


def creatable(name: str, partitions: int = 1, configs: Optional[dict[str, Any]] = None) -> dict:
    return {"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
            "configs": [{"name": k, "value": str(v)} for k, v in (configs or {}).items()]}


def create_topics(sock: socket.socket, topics: list[dict], validate_only: bool = False,
                  timeout_ms: int = 30000) -> dict[str, tuple[int, Optional[str]]]:
    """CreateTopics; {name: (error_code, error_message)}."""
    ans = kraw.call(sock, CREATE_TOPICS, V[CREATE_TOPICS],
                    {"topics": topics, "timeout_ms": timeout_ms, "validate_only": validate_only})
    return {t.name: (t.error_code, t.error_message) for t in ans.topics}


def metadata(sock: socket.socket, topics: Optional[list[str]] = None, allow_auto: bool = False,
             version: int = 9, correlation_id: int = 1):
    body = {"topics": None if topics is None else [{"name": t} for t in topics],
            "allow_auto_topic_creation": allow_auto, "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}
    return kraw.call(sock, METADATA, version, body, correlation_id)


def topic_names(host: str, port: int) -> set[str]:
    with kraw.connect(host, port) as sock:
        return {t.name for t in metadata(sock, None).topics if t.error_code == 0}


def commit(sock: socket.socket, group: str, topic: str, offsets: dict[int, int], meta: str = "",
           correlation_id: int = 1) -> dict[int, int]:
    """A simple (generation -1, no member) OffsetCommit; {partition: error_code}."""
    body = {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "", "group_instance_id": None,
            "topics": [{"name": topic, "partitions": [
                {"partition_index": p, "committed_offset": o, "committed_leader_epoch": -1,
                 "committed_metadata": meta} for p, o in offsets.items()]}]}
    ans = kraw.call(sock, OFFSET_COMMIT, V[OFFSET_COMMIT], body, correlation_id)
    return {p.partition_index: p.error_code for t in ans.topics for p in t.partitions}


def committed(sock: socket.socket, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """OffsetFetch; {partition: committed offset (-1 if none)}; retries while the coordinator loads."""
    body = {"group_id": group, "topics": [{"name": topic, "partition_indexes": partitions}],
            "require_stable": False}
    deadline = time.monotonic() + 20
    while True:
        ans = kraw.call(sock, OFFSET_FETCH, V[OFFSET_FETCH], body)
        errs = {ans.error_code} | {p.error_code for t in ans.topics for p in t.partitions}
        if not errs & RETRIABLE_COORDINATOR or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ans.error_code == 0, f"OffsetFetch {group}: error {ans.error_code}"
    out = {}
    for t in ans.topics:
        for p in t.partitions:
            assert p.error_code == 0, f"OffsetFetch {group} {topic}-{p.partition_index}: error {p.error_code}"
            out[p.partition_index] = p.committed_offset
    return out


def commit_until_ready(sock: socket.socket, group: str, topic: str, offsets: dict[int, int],
                       timeout: float = 20.0) -> None:
    """Commit, retrying while the offsets topic is created or loaded; fail on any other error."""
    deadline = time.monotonic() + timeout
    while True:
        errs = commit(sock, group, topic, offsets)
        if all(e == 0 for e in errs.values()):
            return
        if not set(errs.values()) <= RETRIABLE_COORDINATOR or time.monotonic() > deadline:
            raise AssertionError(f"OffsetCommit {group}: errors {errs}")
        time.sleep(0.1)


def answer_or_close(sock: socket.socket, marker: int, timeout: float) -> Optional[list[bytes]]:
    """The frames read until the answer carrying correlation id ``marker``, or until the peer
    closed (the frames so far); None when neither happened within ``timeout``."""
    sock.settimeout(timeout)
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = kraw.read_frame(sock)
        except ConnectionResetError:
            return frames
        except socket.timeout:
            return None
        if frame is None:
            return frames
        frames.append(frame)
        if struct.unpack_from(">i", frame)[0] == marker:
            return frames
    return None


def fuzz_strategies():
    """tests/protocol/test_fuzz.py as a module: its hypothesis strategies draw bodies from the
    generated field tables (shared by the abuse suite and the cluster fuzz)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tests" / "protocol" / "test_fuzz.py"
    spec = importlib.util.spec_from_file_location("_kbroker_abuse_fuzz_strategies", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
