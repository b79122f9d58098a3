"""The abuse suite (issue 7): hostile and unlucky clients against a REAL kbroker process.

Every case runs inside :func:`compat.abuse.abuse_case`, which keeps a probe client
(ApiVersions/Metadata on its own connection) busy beside the abuse and checks at the
end that the broker process is alive, answers a new connection, that the probe never
failed nor waited more than ``abuse.PROBE_LIMIT``, and that nothing acknowledged was
lost.  Each case also lands in the catalogue printed at the end of the run.

Most cases share one module broker (``target``; restarted if a case killed it);
cases that need their own settings (fetch.max.bytes, a small disk, a descriptor
limit, two listeners, connection limits) start their own.  The shared broker runs
with an address-space limit so that a broker that does not bound its memory dies
with MemoryError instead of taking the test machine down with it.
"""

from __future__ import annotations

import resource
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from compat import abuse, kraw
from compat.abuse import WAIT, abuse_case
from compat.conftest import EXTERNAL, BrokerProcess, watch_broker, free_port, unique_name
from protocol.types import write_uvarint

AS_LIMIT = 4 << 30  # address space of the shared broker (it idles at well under 1 GiB of it)


# -- the shared broker --------------------------------------------------------------------


def _raise_nofile(want: int) -> None:
    """This process (and the brokers it starts) may need thousands of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def _own_broker(tmp_path_factory, name: str, overrides: dict):
    """A module's broker process, under an address-space limit so that an
    unbounded broker dies of MemoryError instead of exhausting the machine."""
    if EXTERNAL:
        pytest.skip("the abuse suite needs a broker process of its own")
    b = BrokerProcess(tmp_path_factory.mktemp(name), overrides, rlimits={resource.RLIMIT_AS: (AS_LIMIT, AS_LIMIT)})
    b.start()
    yield b
    try:
        b.stop()
    except AssertionError:
        pass


def _alive(b, request):
    """The module's broker, started again if an earlier case killed it."""
    if not b.alive():
        b.start()
    watch_broker(request, b)
    return b


@pytest.fixture(scope="module")
def abuse_broker(tmp_path_factory):
    _raise_nofile(12000)
    yield from _own_broker(tmp_path_factory, "kbroker-abuse", {"offsets.topic.num.partitions": 1, "num.partitions": 2})


@pytest.fixture
def target(abuse_broker, request):
    return _alive(abuse_broker, request)


@pytest.fixture(scope="module")
def big_topic(abuse_broker):
    """A 1-partition topic holding four 1 MB batches (offsets 0..3)."""
    name = unique_name("abuse-big")
    with kraw.connect(abuse_broker.host, abuse_broker.port, WAIT) as s:
        assert abuse.create_topics(s, [abuse.creatable(name, 1)])[name][0] == 0
        for i in range(4):
            err, base = abuse.produce(s, name, 0, abuse.batch([bytes([65 + i]) * 1_000_000]))
            assert (err, base) == (0, i)
    return name


def _fresh_topic(broker, partitions: int = 1, configs=None) -> str:
    name = unique_name("abuse")
    with kraw.connect(broker.host, broker.port, WAIT) as s:
        err, msg = abuse.create_topics(s, [abuse.creatable(name, partitions, configs)])[name]
        assert err == 0, f"CreateTopics {name}: {err} {msg}"
    return name


def _settle_fds(broker, base: int, what: str) -> None:
    """Wait until the broker has closed every connection the case opened (no leak)."""
    abuse.wait_for(lambda: not broker.alive() or abuse.open_fds(broker.pid) <= base, WAIT,
                   f"the broker to close its end after {what} ({abuse.open_fds(broker.pid)} fds, base {base})")
    assert broker.alive(), f"the broker died after {what}"


def _server_has_read(port: int, client_port: int) -> bool:
    """True once the broker's socket for this client has nothing unread (rx_queue 0
    in /proc/net/tcp): the broker process has read everything we sent."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, queues = parts[1], parts[2], parts[4]
                    if int(local.rsplit(":", 1)[1], 16) == port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                        return int(queues.split(":")[1], 16) == 0
        except OSError:
            continue
    return False


def _read_until_closed(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Everything the broker still sends, until it closes; fails if it does not close."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return bytes(data)
        except socket.timeout:
            pytest.fail(f"the broker kept a half-closed connection open for {timeout}s")
        if not chunk:
            return bytes(data)
        data += chunk
        if time.monotonic() > deadline:
            pytest.fail("the broker kept sending to a half-closed connection")


# -- 1. RST and half-close at every stage of a request ----------------------------------------

STAGES = ["size-prefix", "mid-frame", "request-sent", "answer-unread", "mid-response", "long-poll"]
REPEATS = {"size-prefix": 10, "mid-frame": 10, "request-sent": 20, "answer-unread": 20,
           "mid-response": 3, "long-poll": 2}


def _end(sock: socket.socket, mode: str) -> None:
    if mode == "rst":
        kraw.reset(sock)
    else:
        sock.shutdown(socket.SHUT_WR)
        _read_until_closed(sock)
        sock.close()


@pytest.mark.parametrize("mode", ["rst", "half-close"])
@pytest.mark.parametrize("stage", STAGES)
def test_disconnect_at_every_stage(target, big_topic, stage, mode):
    """The original bug: connect, send ApiVersions v0, close before reading -> the next
    connection was refused because the whole broker had died.  Every stage, both ways
    of leaving; each time the broker closes its end (no descriptor leak) and lives."""
    wake_topic = _fresh_topic(target) if stage == "long-poll" else None
    with abuse_case(f"{mode} at {stage}", target) as case:
        base = abuse.open_fds(target.pid)
        req = kraw.api_versions_request(7)
        for i in range(REPEATS[stage]):
            if stage == "mid-response":
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the broker's send must block
                sock.settimeout(WAIT)
                sock.connect((target.host, target.port))
            else:
                sock = kraw.connect(target.host, target.port, WAIT)
            if stage == "size-prefix":
                sock.sendall(req[:2])
            elif stage == "mid-frame":
                sock.sendall(req[: len(req) - 3])
            elif stage == "request-sent":
                sock.sendall(req)
            elif stage == "answer-unread":
                sock.sendall(req)
                assert select.select([sock], [], [], WAIT)[0], "no answer to ApiVersions"
                if mode == "rst":
                    sock.close()  # unread data in the receive buffer: the kernel sends RST
                    continue
            elif stage == "mid-response":
                sock.sendall(kraw.encode(abuse.FETCH, 12, abuse.fetch_body(big_topic, [0], 0, 4 << 20, 4 << 20), 8))
                assert len(kraw.recv_exact(sock, 100)) == 100, "no start of the 1 MB Fetch answer"
            elif stage == "long-poll":
                sock.sendall(kraw.encode(abuse.FETCH, 12, abuse.fetch_body(
                    wake_topic, [0], abuse.high_watermark(target.host, target.port, wake_topic),
                    max_wait_ms=5000, min_bytes=1), 8))
                client_port = sock.getsockname()[1]
                abuse.wait_for(lambda: _server_has_read(target.port, client_port), WAIT,
                               "the broker to read the long-poll Fetch")
            _end(sock, mode)
            if stage == "long-poll":
                # wake the parked Fetch: the broker now writes to a reset (or half-closed) socket
                with kraw.connect(target.host, target.port, WAIT) as s:
                    assert abuse.produce(s, wake_topic, 0, abuse.batch([b"wake-%d" % i]))[0] == 0
            _settle_fds(target, base, f"{mode} at {stage} #{i}")
        case.note(repeats=REPEATS[stage])


# -- 2. slow senders, idle connections, connect storms -----------------------------------------


def test_slow_senders_do_not_block_others(target):
    """Five requests dribbled a byte every 10 ms: everyone else is served meanwhile, and
    each dribbled request is answered once complete."""
    names = [unique_name("slow") for _ in range(3)]
    with abuse_case("5 slow senders (1 byte / 10 ms)", target) as case:
        errors: list[str] = []

        def dribble(n: int) -> None:
            try:
                with kraw.connect(target.host, target.port, WAIT) as s:
                    for b in kraw.metadata_request(100 + n, names):
                        s.sendall(bytes([b]))
                        time.sleep(0.01)
                    frame = kraw.read_frame(s)
                    if frame is None or struct.unpack_from(">i", frame)[0] != 100 + n:
                        errors.append(f"dribbler {n}: no answer")
            except OSError as e:
                errors.append(f"dribbler {n}: {e}")

        threads = [threading.Thread(target=dribble, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        case.note(request_bytes=len(kraw.metadata_request(1, names)))


def test_5000_idle_connections(target):
    """5,000 connections that never send: the broker keeps serving, each of them
    still works, and the memory they take is bounded."""
    pid = target.pid
    for who in ("self", str(pid)):
        with open(f"/proc/{who}/limits") as f:
            soft = next(int(line.split()[3]) for line in f if line.startswith("Max open files"))
        if soft < 5100:
            pytest.skip(f"{who}: open-files limit {soft} is below 5,100")
    socks: list[socket.socket] = []
    with abuse_case("5,000 idle connections", target) as case:
        base = abuse.open_fds(pid)
        rss0 = abuse.rss_mb(pid)
        try:
            for _ in range(5000):
                socks.append(socket.create_connection((target.host, target.port), timeout=WAIT))
            abuse.wait_for(lambda: abuse.open_fds(pid) >= base + 5000, 60,
                           "the broker to accept 5,000 connections")
            rss = abuse.wait_stable(lambda: abuse.rss_mb(pid), 10, quiet=0.5)
            case.note(rss_before_mb=round(rss0), rss_5000_idle_mb=round(rss))
            for i in (0, 2500, 4999):  # the idle connections still work
                kraw.call(socks[i], abuse.API_VERSIONS, 0, {}, 1000 + i)
            # Kafka keeps a few KB per connection; 40 KB each is generous for Python
            assert rss - rss0 < 5000 * 40 / 1024, f"5,000 idle connections took {rss - rss0:.0f} MB"
        finally:
            for s in socks:
                s.close()
        _settle_fds(target, base, "closing 5,000 idle connections")


def test_connect_storm(target):
    """2,000 connects and closes as fast as four threads can (half of them with an
    unread request, i.e. ending in RST): the broker keeps serving and leaks nothing."""
    with abuse_case("connect storm (2,000 connects)", target) as case:
        base = abuse.open_fds(target.pid)
        errors: list[str] = []
        t0 = time.monotonic()

        def storm(n: int) -> None:
            for i in range(500):
                try:
                    s = socket.create_connection((target.host, target.port), timeout=WAIT)
                    if i % 2:
                        s.sendall(kraw.api_versions_request(i))
                        kraw.reset(s)
                    else:
                        s.close()
                except OSError as e:
                    errors.append(str(e))

        threads = [threading.Thread(target=storm, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        case.note(storm_s=round(time.monotonic() - t0, 2), refused=len(errors))
        assert not errors, f"{len(errors)} connects failed, e.g. {errors[:3]}"
        _settle_fds(target, base, "the connect storm")


# -- 3. random well-framed bodies for every advertised API and version ---------------------


def _served() -> dict[int, tuple[int, int]]:
    """What the broker advertises (its handler table; the test checks the live answer agrees)."""
    from kbroker.apis import HANDLERS

    return {key: h.versions for key, h in sorted(HANDLERS.items())}


def _api_name(key: int) -> str:
    from protocol import API_INDEX

    return API_INDEX[key].name if key in API_INDEX else str(key)


FUZZ_EXAMPLES = 8  # per (api, version): about 1,400 requests, well under a minute


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory):
    """A broker of its own: random bodies create, delete and reconfigure things."""
    yield from _own_broker(tmp_path_factory, "kbroker-fuzz", {"offsets.topic.num.partitions": 1})


@pytest.fixture
def fuzz_target(fuzz_broker, request):
    return _alive(fuzz_broker, request)


def _answer_or_close(sock: socket.socket, marker: int, timeout: float = WAIT) -> list[bytes]:
    """Frames until the answer carrying correlation id ``marker`` (or a close)."""
    frames = abuse.answer_or_close(sock, marker, timeout)
    if frames is None:
        pytest.fail(f"the broker neither answered nor closed within {timeout}s")
    return frames


@pytest.mark.parametrize("api_key", list(_served()), ids=_api_name)
def test_random_bodies_for_every_api_and_version(fuzz_target, api_key):
    """Hypothesis draws bodies from the protocol's schemas for every advertised
    version; each is sent well-framed, followed by an ApiVersions marker on the same
    connection.  The broker answers (in order, with the right correlation id, in a
    decodable layout) or closes, and stays alive; the probe keeps getting answers."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from protocol import ProtocolError, decode_response, request_schema, supported_versions

    fz = abuse.fuzz_strategies()
    lo, hi = _served()[api_key]
    codec_lo, codec_hi = supported_versions(api_key)
    versions = [v for v in range(lo, hi + 1) if codec_lo <= v <= codec_hi]
    with kraw.connect(fuzz_target.host, fuzz_target.port, WAIT) as s:
        s.sendall(kraw.api_versions_request(1))
        _, err, live = kraw.parse_api_versions_v0(kraw.read_frame(s))
    from kbroker.apis.quorum import CONTROLLER_APIS

    # The controller RPCs are served only by cluster nodes and advertised only on their
    # controller listeners; a single node still gets (and must survive) them.
    expected = None if api_key in CONTROLLER_APIS else (lo, hi)
    assert live.get(api_key) == expected, f"advertised {live.get(api_key)}, handler table says {(lo, hi)}"
    msg = request_schema(api_key)
    sent = [0]

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        for version in versions:
            body = data.draw(fz.body_strategy(msg, version), label=f"v{version}")
            try:
                wire = kraw.encode(api_key, version, body, 11, client_id="abuse-fuzz")
            except ProtocolError:
                continue  # not encodable (e.g. a string longer than its length field)
            marker = kraw.api_versions_request(12)
            with kraw.connect(fuzz_target.host, fuzz_target.port, WAIT) as s:
                try:
                    s.sendall(wire + marker)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed while we wrote: a refusal
                frames = _answer_or_close(s, 12)
            sent[0] += 1
            for frame in frames:
                corr = struct.unpack_from(">i", frame)[0]
                assert corr in (11, 12), f"{_api_name(api_key)} v{version}: answer with correlation id {corr}"
                if corr == 11:
                    decode_response(api_key, version, frame)  # the answer is in the version's layout
            assert fuzz_target.alive(), f"the broker died on {_api_name(api_key)} v{version}: {body!r:.2000}"

    with abuse_case(f"fuzz {_api_name(api_key)} v{versions[0]}-{versions[-1]}", fuzz_target) as case:
        one()
        case.note(requests=sent[0])


# -- 4. pipelining, fetch.max.bytes, a partition listed twice -------------------------------


def _pipeline_fetches(broker, topic: str, n: int) -> socket.socket:
    """A connection that sends ``n`` Fetches for 4 MB each and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect((broker.host, broker.port))
    req = b"".join(kraw.encode(abuse.FETCH, 12, abuse.fetch_body(topic, [0], 0, 4 << 20, 4 << 20), 1000 + i)
                   for i in range(n))
    sock.sendall(req)  # ~30 KB: fits the socket buffers whether the broker reads or not
    return sock


def test_fetch_pipeliners_that_never_read(target, big_topic):
    """Three connections each pipeline 300 Fetches of 4 MB and never read (the issue:
    1.3 GB per connection).  Kafka keeps one request in flight per connection, so the
    broker holds at most one answer for each: RSS must stay bounded."""
    pid = target.pid
    with abuse_case("3 never-reading Fetch pipeliners", target) as case:
        base = abuse.open_fds(pid)
        rss0 = abuse.rss_mb(pid)
        socks = [_pipeline_fetches(target, big_topic, 300) for _ in range(3)]
        try:
            rss = abuse.wait_stable(lambda: abuse.rss_mb(pid), 20, quiet=1.0)
            case.note(rss_before_mb=round(rss0), rss_3_pipeliners_mb=round(rss))
            # one 4 MB answer per connection, plus copies and buffers: well under 150 MB
            assert rss - rss0 < 150, f"3 never-reading pipeliners took {rss - rss0:.0f} MB"
        finally:
            for s in socks:
                kraw.reset(s)
        _settle_fds(target, base, "resetting the pipeliners")


def test_stuck_reader_is_closed_after_connections_max_idle_ms(start_broker):
    """A connection whose answers are never read makes no progress: Kafka counts it
    idle and closes it after connections.max.idle.ms."""
    b = start_broker(connections_max_idle_ms=1000)
    topic = _fresh_topic(b)
    with kraw.connect(b.host, b.port, WAIT) as s:
        for i in range(4):
            assert abuse.produce(s, topic, 0, abuse.batch([b"x" * 1_000_000]))[0] == 0
    with abuse_case("never-reading connection vs connections.max.idle.ms=1000", b) as case:
        base = abuse.open_fds(b.pid)
        sock = _pipeline_fetches(b, topic, 50)
        try:
            abuse.wait_for(lambda: abuse.open_fds(b.pid) > base, WAIT, "the broker to accept the connection")
            t0 = time.monotonic()
            abuse.wait_for(lambda: abuse.open_fds(b.pid) <= base, 15,
                           "the broker to close a connection stuck writing for more than 1 s")
            case.note(closed_after_s=round(time.monotonic() - t0, 2))
        finally:
            sock.close()


def test_fetch_answers_are_capped_by_fetch_max_bytes(start_broker):
    """A broker with fetch.max.bytes=1 MiB never answers a Fetch with more, whatever
    the client asks for; a client's own small max_bytes is honoured too (Kafka lets
    only the first batch exceed it)."""
    b = start_broker(fetch_max_bytes=1048576)
    topic = _fresh_topic(b)
    with kraw.connect(b.host, b.port, WAIT) as s:
        for i in range(30):  # 30 batches of 100 KB = 3 MB
            assert abuse.produce(s, topic, 0, abuse.batch([bytes([48 + i % 10]) * 100_000]))[0] == 0
        with abuse_case("Fetch capped by fetch.max.bytes=1MiB", b) as case:
            frame_sizes = {}
            for label, max_bytes in (("client-50MB", 50 << 20), ("client-250KB", 250_000)):
                s.sendall(kraw.encode(abuse.FETCH, 12, abuse.fetch_body(topic, [0], 0, max_bytes, 50 << 20), 5))
                frame = kraw.read_frame(s)
                assert frame is not None, "the broker closed instead of answering"
                _, ans = kraw.decode(abuse.FETCH, 12, frame)
                records = ans.responses[0].partitions[0].records or b""
                frame_sizes[label] = len(frame)
                limit = min(max_bytes, 1048576)
                assert 0 < len(records) <= limit, f"{label}: {len(records)} bytes of records, limit {limit}"
                assert len(frame) <= limit + 4096, f"{label}: a {len(frame)}-byte answer, limit {limit}"
            case.note(**{f"answer_{k}_bytes": v for k, v in frame_sizes.items()})


def test_partition_listed_five_times_is_answered_once(target, big_topic):
    """Kafka keys a Fetch's partitions by name (a map): the same partition five times
    is one entry in the answer, not five copies of its data."""
    body = abuse.fetch_body(big_topic, [0, 0, 0, 0, 0], 0, 50 << 20, 1 << 20)
    with abuse_case("one partition listed 5 times in a Fetch", target) as case:
        with kraw.connect(target.host, target.port, WAIT) as s:
            s.sendall(kraw.encode(abuse.FETCH, 12, body, 3))
            frame = kraw.read_frame(s)
        assert frame is not None, "the broker closed instead of answering"
        _, ans = kraw.decode(abuse.FETCH, 12, frame)
        entries = [p for t in ans.responses for p in t.partitions if t.topic == big_topic]
        case.note(answer_bytes=len(frame), entries=len(entries))
        if ans.error_code == 0:
            assert len(entries) == 1, f"the partition was answered {len(entries)} times ({len(frame)} bytes)"
        else:
            assert not entries  # refusing the whole request (INVALID_REQUEST) is acceptable too


# -- 5. huge requests -----------------------------------------------------------------------

MAX_REQUEST = 104857600  # socket.request.max.bytes, Kafka's default (the shared broker keeps it)


def _flexible_frame(api_key: int, version: int, body: bytes, correlation_id: int) -> bytes:
    """Size prefix + request header v2 + body (laid out by hand: too big for the codec's pace)."""
    client = b"abuse"
    payload = struct.pack(">hhih", api_key, version, correlation_id, len(client)) + client + b"\x00" + body
    return struct.pack(">i", len(payload)) + payload


def _metadata_v9_empty_names(total_bytes: int, correlation_id: int = 21) -> bytes:
    """Metadata v9 whose frame is ``total_bytes`` long: topics = N empty names (2 bytes each)."""
    n = (total_bytes - 40) // 2
    body = write_uvarint(n + 1) + b"\x01\x00" * n + b"\x00\x00\x00\x00"  # names; auto-create, 2 flags, tags
    return _flexible_frame(abuse.METADATA, 9, body, correlation_id)


def _create_topics_v5(entries: bytes, count: int, validate_only: bool = False, correlation_id: int = 22) -> bytes:
    body = write_uvarint(count + 1) + entries + struct.pack(">i?", 30000, validate_only) + b"\x00"
    return _flexible_frame(abuse.CREATE_TOPICS, 5, body, correlation_id)


def _topic_entry(name: bytes, partitions: int = 1) -> bytes:
    # name, num_partitions, replication_factor, assignments [], configs [], tags
    return write_uvarint(len(name) + 1) + name + struct.pack(">ih", partitions, 1) + b"\x01\x01\x00"


def _hostile(broker, frame: bytes, case, label: str, answer_within: float = WAIT):
    """Send one huge frame on its own connection; return the answer's payload, or None
    if the broker closed the connection (an acceptable refusal).  Records the peak RSS
    (VmHWM, reset first) and the time to the answer.  A broker that neither answers
    nor closes in time is killed (it would burn the CPU of every later test) and the
    case fails."""
    pid = broker.pid
    abuse.reset_peak(pid)
    rss0 = abuse.rss_mb(pid)
    t0 = time.monotonic()
    payload = None
    try:
        with kraw.connect(broker.host, broker.port, answer_within) as s:
            try:
                s.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while we were still writing
            except socket.timeout:
                broker.kill()
                pytest.fail(f"{label}: the broker stopped reading the request for {answer_within}s")
            s.settimeout(answer_within)
            try:
                payload = kraw.read_frame(s)
            except ConnectionResetError:
                payload = None
            except socket.timeout:
                broker.kill()
                pytest.fail(f"{label}: no answer and no close within {answer_within}s after the request")
    finally:
        elapsed = time.monotonic() - t0
        case.note(**{f"{label}_s": round(elapsed, 2)})
        if broker.alive():
            peak = abuse.peak_mb(pid)
            case.note(**{f"{label}_peak_rss_mb": round(peak), f"{label}_growth_mb": round(peak - rss0)})
    assert broker.alive(), f"{label}: the broker died (exit code {broker.proc.returncode})"
    return payload, peak - rss0


def test_metadata_v9_of_4mb_empty_topic_names(target):
    """The issue: 1 GB RSS and a 21 s stall for everyone.  Kafka reads the names into
    a set: one answer entry (INVALID_TOPIC_EXCEPTION for ""), or the broker may refuse
    the request; either way quickly, with bounded memory, others served meanwhile."""
    with abuse_case("Metadata v9 with 4 MB of empty topic names", target) as case:
        payload, growth = _hostile(target, _metadata_v9_empty_names(4 << 20), case, "md4mb")
        if payload is not None:
            corr, ans = kraw.decode(abuse.METADATA, 9, payload)
            assert corr == 21
            assert len(payload) < 1 << 20, f"a {len(payload)}-byte answer to 2M copies of one name"
        assert growth < 200, f"a 4 MB request took {growth:.0f} MB"


def test_largest_allowed_metadata_request(target):
    """Metadata v9 of socket.request.max.bytes (100 MB, Kafka's default): 52 million
    empty names.  Peak RSS and the probe's worst latency go to the catalogue."""
    with abuse_case("largest allowed Metadata (100 MB of empty names)", target) as case:
        payload, growth = _hostile(target, _metadata_v9_empty_names(MAX_REQUEST + 4), case, "md100mb",
                                   answer_within=30)
        if payload is not None:
            assert struct.unpack_from(">i", payload)[0] == 21
            assert len(payload) < 1 << 20
        assert growth < 500, f"a 100 MB request took {growth:.0f} MB"


@pytest.mark.parametrize("count", [9000, 40000])
def test_create_topics_with_many_invalid_names(target, count):
    """The issue: 40,000 invalid names stalled everyone for 18 s (a quadratic duplicate
    check).  Kafka first counts the partitions the request asks for: over 10,000
    refuses every entry with POLICY_VIOLATION; under it, each invalid name gets
    INVALID_TOPIC_EXCEPTION.  Quickly either way; nothing is created."""
    names = [b"bad name %d!" % i for i in range(count)]
    frame = _create_topics_v5(b"".join(_topic_entry(n) for n in names), len(names))
    expected = abuse.POLICY_VIOLATION if count > 10000 else abuse.INVALID_TOPIC_EXCEPTION
    label = f"ct{count // 1000}k"
    with abuse_case(f"CreateTopics of {count:,} invalid names", target) as case:
        payload, growth = _hostile(target, frame, case, label)
        assert payload is not None, "the broker closed instead of answering a CreateTopics of under 1 MB"
        corr, ans = kraw.decode(abuse.CREATE_TOPICS, 5, payload)
        codes = {t.error_code for t in ans.topics}
        assert len(ans.topics) == count and codes == {expected}, \
            f"{len(ans.topics)} results, codes {codes}, expected {expected} for each"
        assert growth < 200, f"a CreateTopics of {len(frame)} bytes took {growth:.0f} MB"


def test_largest_allowed_create_topics_request(target):
    """CreateTopics of socket.request.max.bytes (100 MB): 8.7 million entries of one
    invalid name.  Answered (Kafka: INVALID_REQUEST for the duplicated name) or refused;
    bounded memory; others served meanwhile."""
    entry = _topic_entry(b"x!")
    count = (MAX_REQUEST - 64) // len(entry)
    frame = _create_topics_v5(entry * count, count)
    with abuse_case("largest allowed CreateTopics (100 MB)", target) as case:
        payload, growth = _hostile(target, frame, case, "ct100mb", answer_within=30)
        if payload is not None:
            corr, ans = kraw.decode(abuse.CREATE_TOPICS, 5, payload)
            assert all(t.error_code != 0 for t in ans.topics)
            assert len(payload) < 1 << 20
        assert growth < 500, f"a 100 MB request took {growth:.0f} MB"
        assert "x!" not in abuse.topic_names(target.host, target.port)


def test_create_topics_beyond_10000_records_is_refused(target):
    """Kafka caps one operation at 10,000 metadata records and answers POLICY_VIOLATION
    ("Unable to perform excessively large batch operation"): a topic of 1,000,000
    partitions, validate_only or not, is refused at once and never created."""
    name = unique_name("huge")
    with abuse_case("CreateTopics of 1,000,000 partitions", target) as case:
        with kraw.connect(target.host, target.port, WAIT) as s:
            for validate_only in (True, False):
                t0 = time.monotonic()
                err, msg = abuse.create_topics(s, [abuse.creatable(name, 1_000_000)], validate_only)[name]
                elapsed = time.monotonic() - t0
                case.note(**{f"{'validate' if validate_only else 'create'}_s": round(elapsed, 2)})
                assert err == abuse.POLICY_VIOLATION, f"validate_only={validate_only}: error {err} {msg}"
                assert elapsed < 2, f"refusing took {elapsed:.1f}s"
        assert name not in abuse.topic_names(target.host, target.port)


def test_metadata_does_not_auto_create_5000_topics(target):
    """The issue: one 80 KB Metadata request auto-created 5,000 topics.  With
    num.partitions=2 that is 15,000 metadata records, over Kafka's 10,000 per
    operation: the auto-creation is refused as a whole, nothing is half-created."""
    names = [unique_name("auto") for _ in range(5000)]
    with abuse_case("Metadata auto-creating 5,000 topics", target) as case:
        with kraw.connect(target.host, target.port, 30) as s:
            t0 = time.monotonic()
            ans = abuse.metadata(s, names, allow_auto=True)
            case.note(answer_s=round(time.monotonic() - t0, 2))
        assert len(ans.topics) == 5000
        created = set(names) & abuse.topic_names(target.host, target.port)
        case.note(created=len(created))
        assert not created, f"{len(created)} of 5,000 topics auto-created by one request"


def _zstd_batch_of_empty_records(n: int) -> bytes:
    """A zstd batch of ``n`` records with no key and no value (tiny on the wire)."""
    import zstandard

    from protocol.records import BATCH_HEADER_SIZE, compute_crc

    section = bytearray()
    for i in range(n):
        delta = _zigzag(i)
        body = b"\x00\x00" + delta + b"\x01\x01\x00"  # attributes, ts delta, offset delta, key -1, value -1, 0 headers
        section += _zigzag(len(body)) + body
    payload = zstandard.ZstdCompressor().compress(bytes(section))
    now = int(time.time() * 1000)
    out = bytearray(struct.pack(">qiibIhiqqqhii", 0, 49 + len(payload), -1, 2, 0, 4, n - 1, now, now, -1, -1, -1, n))
    out += payload
    struct.pack_into(">I", out, 17, compute_crc(out))
    assert len(out) == BATCH_HEADER_SIZE + len(payload)
    return bytes(out)


def _zigzag(v: int) -> bytes:
    return write_uvarint((v << 1) ^ (v >> 63))


def test_small_compressed_batch_of_a_million_records(target):
    """The issue: a 6 KB zstd batch declaring 9.5M records stalled everyone for 47 s
    on every ListOffsets by timestamp.  A 1M-record version: producing it and looking
    up offsets by timestamp never stall other clients."""
    try:
        batch = _zstd_batch_of_empty_records(1_000_000)
    except ImportError:
        pytest.skip("zstandard is not installed")
    topic = _fresh_topic(target)
    with abuse_case("zstd batch of 1M empty records + ListOffsets by time", target) as case:
        with kraw.connect(target.host, target.port, 30) as s:
            t0 = time.monotonic()
            err, base = abuse.produce(s, topic, 0, batch)
            case.note(batch_bytes=len(batch), produce_error=err, produce_s=round(time.monotonic() - t0, 2))
            hw = abuse.list_offset(s, topic, 0, -1)
            if err == 0:
                assert hw == base + 1_000_000
            else:
                assert hw == 0
            t0 = time.monotonic()
            for ts in (0, int(time.time() * 1000) - 60000, -3):  # -3: max timestamp
                abuse.list_offset(s, topic, 0, ts)
            case.note(list_offsets_s=round(time.monotonic() - t0, 2))


# -- 6. disk full ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (root only); unmounted after the test's brokers are stopped
    (request it before start_broker)."""
    path = tmp_path / "small-disk"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield path
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _idempotent_producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 5, "message.timeout.ms": 6000, "retry.backoff.ms": 100,
                     "socket.timeout.ms": 5000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})


def _produce_all(producer, topic: str, values: list[bytes], timeout: float = 40.0) -> tuple[dict, list]:
    """Produce every value; ({value: (partition, offset)} acknowledged, [errors])."""
    acked: dict[bytes, tuple[int, int]] = {}
    failed: list[str] = []

    def report(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            failed.append(str(err))

    for v in values:
        while True:
            try:
                producer.produce(topic, value=v, partition=0, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0, f"{left} messages still undecided after {timeout}s"
    return acked, failed


def _check_records(broker, topic: str, acked: dict[bytes, tuple[int, int]]) -> tuple[int, int]:
    """(lost, high watermark): every acknowledged value must be at its offset."""
    got, hw, _ = abuse.read_partition(broker.host, broker.port, topic)
    lost = [(v[:12], off) for v, (_, off) in acked.items() if off not in got or got[off].value != v]
    return len(lost), hw


class _Workload:
    """Produce in chunks with an idempotent acks=all producer, committing an offset
    after each chunk, until a chunk has failures (the resource ran out); then a few
    more commits and CreateTopics on the exhausted broker.  Remembers what was
    acknowledged, what was refused, and what has an unknown outcome."""

    def __init__(self, broker, topic: str, group: str):
        self.broker, self.topic, self.group = broker, topic, group
        self.producer = _idempotent_producer(broker.bootstrap)
        self.admin = kraw.connect(broker.host, broker.port, WAIT)
        abuse.commit_until_ready(self.admin, group, topic, {0: 0})
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: list[str] = []
        self.commits_ok, self.commits_tried = [0], [0]
        self.created: dict[str, int] = {}
        self.admin_closed = False

    def produce(self, values: list[bytes]) -> list[str]:
        acked, failed = _produce_all(self.producer, self.topic, values)
        self.acked.update(acked)
        self.failed += failed
        return failed

    def commit(self, offset: int, meta: str = "") -> None:
        if self.admin_closed:
            return
        self.commits_tried.append(offset)
        try:
            errs = abuse.commit(self.admin, self.group, self.topic, {0: offset}, meta, correlation_id=offset + 10)
        except (ConnectionError, OSError):
            self.admin_closed = True  # closed by the broker: the outcome of this one is unknown
            return
        if errs == {0: 0}:
            self.commits_ok.append(offset)

    def create(self, name: str, partitions: int = 2) -> None:
        if self.admin_closed:
            self.created[name] = -1
            return
        try:
            self.created[name] = abuse.create_topics(self.admin, [abuse.creatable(name, partitions)],
                                                     timeout_ms=5000)[name][0]
        except (ConnectionError, OSError):
            self.admin_closed = True
            self.created[name] = -1  # unknown outcome

    def run(self, chunks: int, chunk_size: int, value_size: int, meta: str, topics: int, exhaust=None) -> None:
        """``exhaust()``: called once the first chunk failed, to use up what is left."""
        n = 0
        for c in range(chunks):
            failed = self.produce([b"%06d-" % (n + i) + b"v" * value_size for i in range(chunk_size)])
            n += chunk_size
            self.commit(c + 1, meta)
            if failed:
                break
        if exhaust is not None:
            exhaust()
        for k in range(5):
            self.commit(1000 + k, meta)
        for _ in range(topics):
            self.create(unique_name("exhausted"))

    def note(self, case) -> None:
        case.note(acked_records=len(self.acked), failed_records=len(self.failed),
                  commits_acked=len(self.commits_ok) - 1, commits_tried=len(self.commits_tried) - 1,
                  topics_created=sum(1 for e in self.created.values() if e == 0),
                  topics_refused=sum(1 for e in self.created.values() if e > 0))

    def close(self) -> None:
        self.admin.close()


def _verify_after_restart(broker, case, w: "_Workload"):
    """Everything acknowledged before the restart is there; nothing refused appeared."""
    topic, acked, group, created = w.topic, w.acked, w.group, w.created
    commits_ok, commits_tried = w.commits_ok, w.commits_tried
    lost, hw = _check_records(broker, topic, acked)
    case.acked += len(acked) + len(commits_ok) + sum(1 for e in created.values() if e == 0)
    case.lost += lost
    with kraw.connect(broker.host, broker.port, WAIT) as s:
        if commits_ok:
            got = abuse.committed(s, group, topic, [0])[0]
            case.note(last_acked_commit=commits_ok[-1], committed_after_restart=got)
            if got < commits_ok[-1] or got not in commits_tried:
                case.lost += 1
        names = abuse.topic_names(broker.host, broker.port)
        for n, err in created.items():
            if err == 0 and n not in names:
                case.lost += 1
                case.note(**{f"lost_topic_{n}": True})
            elif err not in (0, -1):
                assert n not in names, f"CreateTopics {n} was refused ({err}) but the topic exists after a restart"
        # offsets are never reused: a new record lands after everything acknowledged
        top = max((off for _, off in acked.values()), default=-1)
        err, base = abuse.produce(s, topic, 0, abuse.batch([b"after-restart"]))
        assert err == 0 and base >= max(top + 1, hw), f"new record at {base} ({err}); acknowledged up to {top}"
    return lost


def test_disk_full(small_disk, start_broker):
    """log.dirs on an 8 MB tmpfs with a 3 MB filler file on it.  An idempotent acks=all
    producer writes 200 KB chunks until the disk is full, committing an offset after
    each chunk; then commits and CreateTopics are tried on the full disk.  The broker
    answers errors and keeps serving; after the filler is deleted and the broker
    restarted, every acknowledged record is at its offset, the committed offset is
    the last acknowledged one (or a later attempt), acknowledged topics exist and
    refused ones do not, and a new record gets a new offset."""
    b = start_broker(data_dir=small_disk / "data", offsets_topic_num_partitions=1)
    topic = _fresh_topic(b, 1, {"segment.bytes": 1048576})
    filler, top_up = small_disk / "filler", small_disk / "top-up"
    filler.write_bytes(b"\0" * (3 << 20))

    def fill_the_rest() -> None:
        """The failed chunk may have left a few KB: take every last byte."""
        with open(top_up, "wb", buffering=0) as f:
            for size in (1 << 16, 4096, 512, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError:
                    pass

    with abuse_case("disk full: produce, commit, create topics", b) as case:
        w = _Workload(b, topic, unique_name("g-disk"))
        w.run(chunks=40, chunk_size=100, value_size=2000, meta="m" * 1000, topics=3, exhaust=fill_the_rest)
        w.close()
        w.note(case)
        assert w.failed, "the disk never filled up: the test did not test anything"
        assert b.alive(), "the broker died on a full disk"
        with case.probe.paused():
            filler.unlink()
            top_up.unlink()
            b.stop()
            b.start()
        _verify_after_restart(b, case, w)


# -- 7. descriptor exhaustion ---------------------------------------------------------------


def _prlimit_nofile(pid: int, soft: int, hard: int) -> None:
    """Only the soft limit moves: raising a hard limit again needs CAP_SYS_RESOURCE."""
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:{hard}"], check=True, capture_output=True)


def test_descriptor_exhaustion(start_broker):
    """The broker's descriptor limit (soft) is cut to 20 above what it has open; an
    idempotent producer makes segments roll (segment.ms=1, one batch per chunk) until
    descriptors run out, committing after each chunk; then commits and CreateTopics.
    The broker answers errors or closes connections and stays alive; after the limit
    is raised and the broker restarted it starts, every acknowledged record and
    commit is there, refused topics do not exist, and offsets are not reused."""
    b = start_broker(offsets_topic_num_partitions=1)
    topic = _fresh_topic(b, 1, {"segment.ms": 1})
    with abuse_case("descriptor exhaustion: produce, commit, create topics", b) as case:
        w = _Workload(b, topic, unique_name("g-fd"))
        assert not w.produce([b"warm-up"])  # the producer's connections exist now
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = abuse.open_fds(b.pid) + 20
        _prlimit_nofile(b.pid, limit, hard)
        try:
            w.run(chunks=60, chunk_size=5, value_size=200, meta="", topics=8)
            w.note(case)
            # a codec the broker has not used yet may be imported lazily, which opens files:
            # the answer is an error code or a clean close, never a dead broker
            from protocol.records import Compression

            answers = {}
            for codec in (Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
                value = b"compressed-" + codec.name.encode()
                if w.admin_closed:  # (new connections wait in the accept queue while descriptors are out)
                    break
                try:
                    err, off = abuse.produce(w.admin, topic, 0, abuse.batch([value], compression=codec))
                except (ConnectionError, OSError) as e:
                    answers[codec.name] = type(e).__name__
                    w.admin_closed = True
                    continue
                answers[codec.name] = err
                if err == 0:
                    w.acked[value] = (0, off)
            case.note(compressed_produce=answers)
            case.note(fd_limit=limit)
            assert w.failed or any(e != 0 for e in w.created.values()), \
                "no operation hit the descriptor limit: the test did not test anything"
            assert b.alive(), "the broker died when it ran out of descriptors"
        finally:
            if b.alive():
                _prlimit_nofile(b.pid, hard, hard)
            w.close()
        assert abuse.answers(b.host, b.port), "no answer on a new connection after the limit was raised"
        with case.probe.paused():
            b.stop()
            b.start()
        _verify_after_restart(b, case, w)


# -- 8. batch headers that lie ----------------------------------------------------------------


def test_batch_claiming_2pow31_offsets_is_invalid_record(target):
    """A one-record batch whose header claims last_offset_delta = 2^31-1: Kafka answers
    INVALID_RECORD (87); the high watermark does not move and the next record gets the
    next offset."""
    from protocol.records import compute_crc

    topic = _fresh_topic(target)
    with abuse_case("batch header claiming last_offset_delta 2^31-1", target) as case:
        with kraw.connect(target.host, target.port, WAIT) as s:
            assert abuse.produce(s, topic, 0, abuse.batch([b"before"])) == (0, 0)
            liar = bytearray(abuse.batch([b"liar"]))
            struct.pack_into(">i", liar, 23, 2**31 - 1)  # last_offset_delta (inside the CRC's span)
            struct.pack_into(">I", liar, 17, compute_crc(liar))
            err, _ = abuse.produce(s, topic, 0, bytes(liar))
            hw = abuse.list_offset(s, topic, 0, -1)
            case.note(error=err, high_watermark_after_lie=hw)
            assert err == abuse.INVALID_RECORD, f"the lying batch got error {err}"
            assert hw == 1, f"the high watermark moved to {hw}"
            after = abuse.produce(s, topic, 0, abuse.batch([b"after"]))
            case.acked = 2
            got, end, _ = abuse.read_partition(target.host, target.port, topic)
            values = [got[o].value for o in sorted(got)]
            case.lost = sum(v not in values for v in (b"before", b"after"))
        assert after == (0, 1) and end == 2 and values == [b"before", b"after"], (after, end, values)


# -- 9. listener-specific metadata ------------------------------------------------------------


def test_metadata_answers_with_the_listener_the_request_came_in_on(start_broker):
    """Two listeners, advertised with different hosts: Kafka answers Metadata and
    FindCoordinator with the endpoint of the listener the request arrived on."""
    internal, external = free_port(), free_port()
    b = start_broker({
        "listeners": f"PLAINTEXT://127.0.0.1:{internal},EXTERNAL://127.0.0.1:{external}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{internal},EXTERNAL://localhost:{external}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
    }, port=internal)
    with abuse_case("Metadata on the EXTERNAL listener", b) as case:
        seen = {}
        for port, host in ((internal, "127.0.0.1"), (external, "localhost")):
            with kraw.connect("127.0.0.1", port, WAIT) as s:
                md = abuse.metadata(s, [])
                coord = kraw.call(s, abuse.FIND_COORDINATOR, 3, {"key": "g", "key_type": 0})
            seen[port] = ([(br.host, br.port) for br in md.brokers], (coord.host, coord.port))
            assert seen[port][0] == [(host, port)], f"Metadata on port {port}: brokers {seen[port][0]}"
            assert coord.error_code == 0 and seen[port][1] == (host, port), \
                f"FindCoordinator on port {port}: {coord}"
        case.note(external=seen[external][0])
        # and a real client bootstrapping through EXTERNAL works end to end
        from compat.clients import Msg, consume_confluent, produce_confluent

        topic = _fresh_topic(b)
        placements = produce_confluent(f"localhost:{external}", topic, [Msg(b"k", b"via-external")])
        case.acked = 1
        got = consume_confluent(f"localhost:{external}", topic, 1, timeout=20)
        case.lost = 0 if [r.value for r in got] == [b"via-external"] else 1
        assert placements == [(0, 0)]


# -- 10. connection limits ------------------------------------------------------------------


def _served_within(sock: socket.socket, timeout: float) -> bool:
    """True if an ApiVersions request on ``sock`` is answered within ``timeout``;
    False if the broker closed the connection or kept it waiting."""
    try:
        sock.settimeout(timeout)
        sock.sendall(kraw.api_versions_request(31))
        frame = kraw.read_frame(sock)
        return frame is not None and struct.unpack_from(">i", frame)[0] == 31
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        return False


def test_max_connections_per_ip(start_broker):
    """max.connections.per.ip=5: the 6th connection from 127.0.0.1 is closed by the
    broker, another address is still served, and closing one frees a slot."""
    b = start_broker(max_connections_per_ip=5)
    with abuse_case("max.connections.per.ip=5", b, probe_source="127.0.0.2") as case:
        base = abuse.open_fds(b.pid)
        five = [kraw.connect(b.host, b.port, WAIT) for _ in range(5)]
        try:
            for s in five:
                assert _served_within(s, WAIT), "one of the first five connections was not served"
            with kraw.connect(b.host, b.port, WAIT) as sixth:
                sixth.settimeout(WAIT)
                try:
                    closed = sixth.recv(1) == b""
                except ConnectionResetError:
                    closed = True
                except socket.timeout:
                    closed = False
                assert closed, "the 6th connection from 127.0.0.1 was not closed by the broker"
            five.pop().close()
            abuse.wait_for(lambda: abuse.open_fds(b.pid) <= base + 4, WAIT, "the broker to close a freed slot")
            with kraw.connect(b.host, b.port, WAIT) as again:
                assert _served_within(again, WAIT), "a freed slot was not given to a new connection"
            case.note(limit=5)
        finally:
            for s in five:
                s.close()
        abuse.wait_for(lambda: abuse.open_fds(b.pid) <= base, WAIT, "the broker to close every connection")


def test_dynamic_max_connections_is_enforced(start_broker):
    """IncrementalAlterConfigs sets the cluster default max.connections=3 at runtime:
    a 4th connection is not served (closed, or kept waiting as Kafka's acceptor
    does) while three are open; closing one lets a new connection in."""
    b = start_broker()
    conns: list[socket.socket] = []

    def try_new() -> bool:
        with kraw.connect(b.host, b.port, WAIT) as s:
            return _served_within(s, 1.0)

    with abuse_case("dynamic max.connections=3", b, probe=False) as case:
        base = abuse.open_fds(b.pid)
        admin = kraw.connect(b.host, b.port, WAIT)
        conns.append(admin)
        try:
            body = {"resources": [{"resource_type": 4, "resource_name": "", "configs": [
                {"name": "max.connections", "config_operation": 0, "value": "3"}]}], "validate_only": False}
            ans = kraw.call(admin, abuse.INCREMENTAL_ALTER_CONFIGS, 1, body)
            assert ans.responses[0].error_code == 0, ans
            for _ in range(2):
                conns.append(kraw.connect(b.host, b.port, WAIT))
                assert _served_within(conns[-1], WAIT), "one of the first three connections was not served"
            fourth = kraw.connect(b.host, b.port, WAIT)
            conns.append(fourth)
            assert not _served_within(fourth, 1.0), "a 4th connection was served with max.connections=3"
            conns.pop(1).close()
            # the waiting 4th (Kafka) or a new connection (a broker that closed the 4th) gets in
            abuse.wait_for(try_new, WAIT, "a connection to be served after a slot was freed")
            case.note(limit=3)
        finally:
            for s in conns:
                s.close()
        abuse.wait_for(lambda: abuse.open_fds(b.pid) <= base, WAIT, "the broker to close every connection")
