"""Random well-framed controller RPCs against the CONTROLLER listeners of a live 3-node cluster.

The cousin of ``test_abuse.py::test_random_bodies_for_every_api_and_version``
for what only a cluster node serves: every API in
:data:`kbroker.apis.quorum.CONTROLLER_APIS` (Vote, BeginQuorumEpoch,
EndQuorumEpoch, FetchSnapshot, DescribeQuorum, BrokerRegistration,
BrokerHeartbeat, AllocateProducerIds, Envelope) plus Fetch, at every version
both the handler and the codec speak, sent to the CONTROLLER listener of a
node of one ``kbroker cluster --nodes 3`` started for the module.

Bodies come from the hypothesis strategies of ``tests/protocol/test_fuzz.py``
(built from the field tables).  Half of them are sent as drawn; the other
half are *aimed* so that they get past the first checks and reach Raft and
the controller: exactly one topic ``__cluster_metadata`` (topic id 1 for
Fetch v13+) and partition 0, the cluster's own id (or none), senders that
are voters (1..3), an observer (4) or anything, epochs near the
quorum's current one or random ones (int32 extremes included), Fetches from replicas
(``replica_id`` / ``replica_state``), broker RPCs naming brokers 1..3, and
Envelopes around an encoded forwarded admin request.

Per request: the node answers with the request's correlation id, in that
version's layout, or closes the connection (an ApiVersions marker follows on
the same connection); every node process is still alive afterwards.

Random Raft messages may legitimately disturb the quorum (a Vote or
BeginQuorumEpoch with a huge epoch moves the voters to it: Raft has no
authentication, Kafka's neither), so the last test asks for recovery, not
for "nothing changed": within a generous deadline (polling) one node is the
active controller (DescribeQuorum v2 on the controller listeners), a
CreateTopics through a broker listener succeeds, the topic appears in every
node's Metadata, and every node lists the three brokers.
"""

from __future__ import annotations

import struct
import time
import uuid

import pytest

from compat import kraw
from compat.conftest import EXTERNAL, unique_name, watch_broker
from compat.abuse import answer_or_close, fuzz_strategies
from compat.test_abuse import FUZZ_EXAMPLES
from compat.test_cluster import HOST, Cluster, wait_for

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(bool(EXTERNAL), reason="starts a cluster of its own (KBROKER_BOOTSTRAP is set)"),
]

ANSWER_WAIT = 20.0  # a parked Raft Fetch is answered within fetch_max_wait_ms + request_timeout_ms
RECOVERY_WAIT = 45.0  # the quorum may have been moved to a huge epoch: elections, then registrations
SETTLE_WAIT = 20.0  # after each API: an election takes seconds (election timeout 1 s, fetch timeout 2 s)
MINIMAL_WAIT = 20.0  # the minimal reproductions: elections and registrations on an otherwise idle cluster
METADATA_TOPIC = "__cluster_metadata"
METADATA_TOPIC_ID = uuid.UUID(int=1)
FETCH, API_VERSIONS, CREATE_TOPICS, DESCRIBE_QUORUM = 1, 18, 19, 55


def _targets() -> dict[int, tuple[int, int]]:
    """{api key: versions} to fuzz: the controller APIs and Fetch, where handler and codec agree."""
    from kbroker.apis import HANDLERS
    from kbroker.apis.quorum import CONTROLLER_APIS
    from protocol import supported_versions

    out = {}
    for key in sorted(CONTROLLER_APIS | {FETCH}):
        lo, hi = HANDLERS[key].versions
        clo, chi = supported_versions(key)
        out[int(key)] = (max(lo, clo), min(hi, chi))
    return out


def _api_name(key: int) -> str:
    from protocol import API_INDEX

    return API_INDEX[key].name if key in API_INDEX else str(key)


# -- the cluster -------------------------------------------------------------------------


def _start_cluster(workdir) -> Cluster:
    c = Cluster(workdir, 3, overrides={"group.initial.rebalance.delay.ms": "0"})
    c.start()
    c.wait_brokers(c.expected_brokers(), timeout=60)
    c.cluster_id = c.brokers[0].metadata([]).cluster_id
    c.spoiled = False  # set by a test that leaves the quorum unusable for the next one
    return c


def _dead(c: Cluster) -> list[int]:
    return [i for i, n in sorted(c.nodes.items()) if not n.alive()]


@pytest.fixture(scope="module")
def _clusters(tmp_path_factory):
    """The module's cluster; a new one if a node of the last one died (so that one crash does not
    hide what the other APIs do)."""
    made: list[Cluster] = []

    def get() -> Cluster:
        if not made or _dead(made[-1]) or not made[-1].alive() or made[-1].spoiled:
            if made:
                made[-1].cleanup(fast=True)
            made.append(_start_cluster(tmp_path_factory.mktemp("kbroker-cluster-fuzz")))
        return made[-1]

    yield get
    for c in made:
        c.cleanup(fast=True)


@pytest.fixture
def cluster(request, _clusters):
    """A live cluster, every node's log shown if the test fails (a fresh one after a failure)."""
    c = _clusters()
    watch_broker(request, c)
    for n in c.nodes.values():
        watch_broker(request, n)
    failed_before = request.session.testsfailed
    yield c
    if request.session.testsfailed != failed_before:
        c.spoiled = True


# -- aiming random bodies at Raft and the controller -------------------------------------


def _aim(st, api: int, version: int, body: dict, cluster_id: str, epoch_now: int):
    """A strategy: ``body`` (drawn at random) rewritten so that it gets past the first checks
    (``epoch_now``: the quorum's epoch, which the aimed epochs are drawn near)."""
    from protocol import ApiKey, encode_request, request_schema, supported_versions

    from kbroker.apis import FORWARDED

    ids = st.sampled_from([1, 2, 3, 4, -1]) | st.integers(-(2**31), 2**31 - 1)
    epochs = (st.integers(-2, 30).map(lambda d: max(-1, min(epoch_now + d, 2**31 - 1)))
              | st.sampled_from([2**31 - 1, 2**31 - 2, -1, 0, 2**30]) | st.integers(-(2**31), 2**31 - 1))
    offsets = st.integers(-1, 200) | st.integers(-(2**63), 2**63 - 1)
    cids = st.just(cluster_id) | st.none()

    @st.composite
    def aimed(draw):
        b = dict(body)
        names = {f.name for f in request_schema(api).fields
                 if f.versions[0] <= version <= f.versions[1]}
        if "cluster_id" in names:
            (f,) = [f for f in request_schema(api).fields if f.name == "cluster_id"]
            nullable = f.nullable is not None and f.nullable[0] <= version <= f.nullable[1]
            b["cluster_id"] = draw(cids if nullable else st.just(cluster_id), label="cluster_id")
        for field in ("voter_id", "replica_id", "broker_id"):
            if field in names:
                b[field] = draw(ids, label=field)
        if api == ApiKey.ENVELOPE:
            inner = draw(st.sampled_from(sorted(FORWARDED)), label="inner api")
            lo, hi = supported_versions(inner)
            iv = draw(st.integers(lo, hi), label="inner version")
            ibody = draw(fuzz_strategies().body_strategy(request_schema(inner), iv), label="inner body")
            try:
                b["request_data"] = bytes(encode_request(inner, iv, ibody, correlation_id=7, client_id="x"))[4:]
            except Exception:  # noqa: BLE001 - not encodable: keep the random bytes
                pass
            return b
        if api == ApiKey.FETCH:
            if version >= 15 and b.get("replica_state") is not None:
                b["replica_state"] = {**b["replica_state"], "replica_id": draw(ids, label="replica_state.replica_id")}
            b["max_wait_ms"] = draw(st.integers(0, 600), label="max_wait_ms")
        # one topic holding one partition: any the random body has, or one of another random body
        def first_partition(body):
            return next(((t, t["partitions"][0]) for t in body.get("topics") or [] if t.get("partitions")), None)

        found = first_partition(b)
        for _ in range(4):
            if found is not None:
                break
            found = first_partition(draw(fuzz_strategies().body_strategy(request_schema(api), version),
                                         label="another body"))
        if found is None:
            return b
        topic = {**found[0], "partitions": [found[1]]}
        if api == ApiKey.FETCH:
            name_field, name, index_field = ("topic_id", METADATA_TOPIC_ID, "partition") if version >= 13 \
                else ("topic", METADATA_TOPIC, "partition")
        elif api == ApiKey.FETCH_SNAPSHOT:
            name_field, name, index_field = "name", METADATA_TOPIC, "partition"
        else:
            name_field, name, index_field = "topic_name", METADATA_TOPIC, "partition_index"
        topic[name_field] = name
        parts = topic.get("partitions") or []
        if parts:
            p = dict(parts[0])
            p[index_field] = 0
            for field in ("replica_id", "leader_id", "candidate_id"):
                if field in p:
                    p[field] = draw(ids, label=f"partition.{field}")
            for field in ("replica_epoch", "leader_epoch", "current_leader_epoch", "last_offset_epoch",
                          "last_fetched_epoch"):
                if field in p:
                    p[field] = draw(epochs, label=f"partition.{field}")
            for field in ("last_offset", "fetch_offset", "high_watermark", "log_start_offset"):
                if field in p:
                    p[field] = draw(offsets, label=f"partition.{field}")
            if "preferred_successors" in p:
                p["preferred_successors"] = draw(st.lists(ids, max_size=3), label="preferred_successors")
            topic["partitions"] = [p]
        b["topics"] = [topic]
        return b

    return aimed()


# -- waiting, with an eye on the nodes ------------------------------------------------------

HISTORY: dict[tuple[int, int], list[str]] = {}  # (cluster id(), node id) -> the last requests sent to it
HISTORY_LEN = 12


def _sent(c: Cluster, node_id: int, what: str) -> None:
    h = HISTORY.setdefault((id(c), node_id), [])
    h.append(what)
    del h[:-HISTORY_LEN]


def _death_report(c: Cluster) -> str:
    out = []
    for nid in _dead(c):
        n = c.nodes[nid]
        errors = [line for line in n.log_text(limit=10 ** 7).splitlines()
                  if " ERROR " in line or "Error" in line or "Traceback" in line][-12:]
        out.append(f"node {nid} died (log {n.log_path}); its last error lines:\n  " + "\n  ".join(errors)
                   + f"\nthe last requests sent to node {nid} (newest last):\n  "
                   + "\n  ".join(HISTORY.get((id(c), nid), ["(none)"])))
    return "\n".join(out)


def _check_alive(c: Cluster) -> None:
    if _dead(c):
        pytest.fail(_death_report(c), pytrace=False)


def _wait(c: Cluster, predicate, what: str, timeout: float = RECOVERY_WAIT, state=None):
    """``wait_for``, failing at once (with the death report) if a node dies meanwhile."""
    def alive_and(pred=predicate):
        if _dead(c):
            return "dead"
        return pred()

    try:
        value = wait_for(alive_and, what, timeout, state=state)
    finally:
        _check_alive(c)
    return value


def _quorum_views(c: Cluster) -> dict[int, tuple]:
    """{node: (error, leader id, epoch)} from DescribeQuorum v2 on each CONTROLLER listener
    (a follower answers NOT_LEADER_OR_FOLLOWER naming the leader it follows)."""
    out = {}
    for nid, n in sorted(c.nodes.items()):
        try:
            resp = kraw.request(HOST, n.controller_port, DESCRIBE_QUORUM, 2, {
                "topics": [{"topic_name": METADATA_TOPIC, "partitions": [{"partition_index": 0}]}]}, timeout=5)
            (t,) = resp.topics
            (p,) = t.partitions
            out[nid] = (resp.error_code or p.error_code, p.leader_id, p.leader_epoch)
        except (OSError, ConnectionError, ValueError) as e:
            out[nid] = (type(e).__name__,)
    return out


def _settled(c: Cluster, above_epoch: int = -1):
    """(leader, epoch) once every node follows one leader of the cluster, which describes the quorum."""
    views = _quorum_views(c)
    keys = {v[1:] for v in views.values()}
    if len(keys) != 1:
        return None
    ((leader, epoch),) = keys
    if leader not in c.nodes or epoch <= above_epoch or views[leader][0] != 0:
        return None
    return leader, epoch


def _wait_settled(c: Cluster, above_epoch: int = -1, timeout: float = RECOVERY_WAIT) -> tuple[int, int]:
    return _wait(c, lambda: _settled(c, above_epoch),
                 f"every node follows one leader of the cluster (at an epoch above {above_epoch})", timeout,
                 state=lambda: _quorum_views(c))


def _check_works(c: Cluster, above_epoch: int = -1, timeout: float = RECOVERY_WAIT) -> tuple[int, int]:
    """The quorum has one leader; a CreateTopics through a broker listener succeeds; every node
    shows the topic and lists the three brokers.  (leader, epoch)."""
    leader, epoch = _wait_settled(c, above_epoch, timeout)
    expected = c.expected_brokers()
    _wait(c, lambda: all(n.brokers() == expected for n in c.brokers), f"every node lists brokers {sorted(expected)}", timeout,
          state=lambda: {n.node_id: sorted(n.brokers()) for n in c.brokers})
    name = unique_name("after-fuzz")
    _wait(c, lambda: c.brokers[0].create_topic_raw(name, 2, timeout_ms=10000)[0] in (0, 36),  # 36: exists (a retry)
          f"CreateTopics {name} through node 1 succeeds", timeout, state=lambda: c.brokers[0].create_topic_raw(name, 2, timeout_ms=5000))
    _wait(c, lambda: all(n.topics([name]).get(name) is not None and len(n.topics([name])[name]) == 2
                         for n in c.brokers),
          f"topic {name} with 2 partitions in every node's Metadata", timeout,
          state=lambda: {n.node_id: n.topics([name]).get(name) for n in c.brokers})
    _wait(c, lambda: all(n.brokers() == expected for n in c.brokers), f"every node lists brokers {sorted(expected)}", timeout,
          state=lambda: {n.node_id: sorted(n.brokers()) for n in c.brokers})
    return _wait_settled(c, timeout=timeout)


# -- one request ------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", list(_targets()), ids=_api_name)
def test_random_controller_rpcs(cluster, api_key):
    """Random (and aimed) bodies for every version, each to one node's CONTROLLER listener; the
    nodes live, and afterwards every node follows one leader of the cluster again."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from protocol import ProtocolError, decode_response, request_schema

    fz = fuzz_strategies()
    lo, hi = _targets()[api_key]
    versions = list(range(lo, hi + 1))
    nodes = [cluster.nodes[i] for i in sorted(cluster.nodes)]
    for n in nodes:  # what the CONTROLLER listener advertises
        with kraw.connect(HOST, n.controller_port, ANSWER_WAIT) as s:
            s.sendall(kraw.api_versions_request(1))
            _, err, live = kraw.parse_api_versions_v0(kraw.read_frame(s))
        assert err == 0 and live.get(api_key) == (lo, hi), \
            f"node {n.node_id}'s CONTROLLER listener advertises {_api_name(api_key)} {live.get(api_key)}"
    msg = request_schema(api_key)
    sent = {"raw": 0, "aimed": 0, "answered": 0, "closed": 0}
    failures: list[str] = []  # the first failure, as seen (hypothesis' replay meets a changed cluster)

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        if failures:
            raise AssertionError(failures[0])
        epoch_now = max([v[2] for v in _quorum_views(cluster).values() if len(v) == 3] or [0])
        for version in versions:
            body = data.draw(fz.body_strategy(msg, version), label=f"v{version}")
            aimed = data.draw(st.booleans(), label="aimed")
            if aimed:
                body = data.draw(_aim(st, api_key, version, body, cluster.cluster_id, epoch_now), label=f"aimed v{version}")
            node = nodes[data.draw(st.integers(0, len(nodes) - 1), label="node")]
            try:
                wire = kraw.encode(api_key, version, body, 11, client_id="cluster-fuzz")
            except ProtocolError:
                continue  # not encodable (e.g. a string longer than its length field)
            what = f"{_api_name(api_key)} v{version} to node {node.node_id}: {body!r:.3000}"
            _sent(cluster, node.node_id, f"{time.strftime('%H:%M:%S')} {what}")
            try:
                with kraw.connect(HOST, node.controller_port, ANSWER_WAIT) as s:
                    try:
                        s.sendall(wire + kraw.api_versions_request(12))
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # closed while we wrote: a refusal
                    frames = answer_or_close(s, 12, ANSWER_WAIT)
                assert frames is not None, f"no answer nor close within {ANSWER_WAIT:.0f}s: {what}"
                sent["aimed" if aimed else "raw"] += 1
                answered = False
                for frame in frames:
                    corr = struct.unpack_from(">i", frame)[0]
                    assert corr in (11, 12), f"answer with correlation id {corr}: {what}"
                    if corr == 11:
                        answered = True
                        try:
                            decode_response(api_key, version, frame)
                        except ProtocolError as e:
                            raise AssertionError(f"the answer does not decode ({e}): {what}") from None
                sent["answered" if answered else "closed"] += 1
                if _dead(cluster):
                    raise AssertionError(f"a node died; the request just sent: {what}\n{_death_report(cluster)}")
            except (AssertionError, OSError) as e:
                failures.append(f"{type(e).__name__}: {e}" if not isinstance(e, AssertionError) else str(e))
                raise

    try:
        one()
    except Exception:  # noqa: BLE001 - report the first failure as it happened
        if failures:
            pytest.fail(failures[0], pytrace=False)
        raise
    print(f"{_api_name(api_key)} v{lo}-{hi}: {sent}")
    _check_alive(cluster)
    try:
        leader, epoch = _wait_settled(cluster, timeout=SETTLE_WAIT)  # a crash it leads to shows here, in this test
    except AssertionError as e:
        recent = "\n".join(f"node {nid}:\n  " + "\n  ".join(h) for (cid, nid), h in sorted(HISTORY.items())
                           if cid == id(cluster))
        pytest.fail(f"the quorum did not recover after the {_api_name(api_key)} fuzzing: {e}\n"
                    f"the last requests sent to each node (newest last):\n{recent}", pytrace=False)
    print(f"  then: leader node {leader}, epoch {epoch}")


# -- afterwards -----------------------------------------------------------------------------


def test_the_cluster_recovers_after_the_fuzzing(cluster):
    """No crash, no hang: the quorum elects a leader by itself, admin changes go through, and
    every node lists the three brokers and the new topic."""
    try:
        leader, epoch = _check_works(cluster)
        print(f"leader after the fuzzing: node {leader}, epoch {epoch}")
    finally:
        cluster.spoiled = True  # its epochs may be near the end of int32: the next tests start afresh


# -- a minimal reproduction of what the fuzzing found ------------------------------------------


def test_begin_quorum_epoch_naming_a_leader_that_is_no_voter(cluster):
    """Found by the fuzzing: BeginQuorumEpoch v0 naming leader 1024 (no voter of the quorum) at a
    higher epoch, sent to a node's CONTROLLER listener.  The node must not follow (or must
    survive following) a leader it has no address for, and the quorum must recover."""
    leader, epoch = _wait_settled(cluster)
    victim = next(nid for nid in sorted(cluster.nodes) if nid != leader)
    body = {"cluster_id": None, "topics": [{"topic_name": METADATA_TOPIC, "partitions": [
        {"partition_index": 0, "leader_id": 1024, "leader_epoch": epoch + 1000}]}]}
    _sent(cluster, victim, f"BeginQuorumEpoch v0 to node {victim}: {body!r}")
    try:
        kraw.request(HOST, cluster.nodes[victim].controller_port, 53, 0, body)  # answered, whatever it says
        _check_works(cluster, timeout=MINIMAL_WAIT)
    finally:
        cluster.spoiled = True


def test_vote_at_the_last_int32_epoch(cluster):
    """Found by the fuzzing: a Vote v0 at epoch 2^31-1 (int32's last) for voter 2, sent to the other
    voters.  They move to that epoch; nobody is elected in it, and the next election's epoch does not
    fit in int32 (Kafka's epochs are int32 on the wire).  The quorum must still recover by itself
    (refuse such an epoch, or elect a leader at it) rather than stay leaderless for good."""
    last = 2**31 - 1
    _wait_settled(cluster)
    try:
        for nid in sorted(cluster.nodes):
            if nid == 2:
                continue
            body = {"cluster_id": None, "topics": [{"topic_name": METADATA_TOPIC, "partitions": [
                {"partition_index": 0, "replica_epoch": last, "replica_id": 2, "last_offset_epoch": last,
                 "last_offset": 2**62}]}]}
            _sent(cluster, nid, f"Vote v0 to node {nid}: {body!r}")
            kraw.request(HOST, cluster.nodes[nid].controller_port, 52, 0, body)  # answered, whatever it says
        _check_works(cluster, timeout=MINIMAL_WAIT)
    finally:
        cluster.spoiled = True


