"""Consumer group timings against a real kbroker: rebalances and OffsetCommit rate.

Measures, with confluent-kafka (librdkafka) consumers in one process:

* join: from the first subscribe() to every member holding its assignment,
  for a group of 1 and a group of N members (all subscribing at once);
* leave: from one of the N members closing (LeaveGroup) to the other N-1
  holding the reassigned partitions;
* commit: synchronous OffsetCommit round trips per second from one
  consumer, and pipelined OffsetCommit requests per second over one raw
  connection (``--inflight`` requests outstanding), which is the server's
  own rate.

A private kbroker is started (``group.initial.rebalance.delay.ms`` from
``--initial-delay``, default 0 like the test broker; Kafka's default is
3000), unless ``--bootstrap`` names a running one.

    python scripts/bench_groups.py [--members 10] [--partitions 20] [--commit-seconds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from protocol import ApiKey, decode_response, encode_request  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(initial_delay: int):
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-groups-")
    cmd = [sys.executable, "-m", "kbroker",
           "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={data}",
           "--override", f"group.initial.rebalance.delay.ms={initial_delay}"]
    log = open(os.path.join(data, "kbroker.log"), "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}", data
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("kbroker did not start; see " + data)


class Member:
    """A confluent-kafka consumer polled by its own thread, recording assignment changes."""

    def __init__(self, bootstrap: str, group: str, topic: str, extra: dict):
        from confluent_kafka import Consumer

        conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "session.timeout.ms": 10000}
        conf.update(extra)
        self.consumer = Consumer(conf)
        self.topic = topic
        self.assigned: set[int] = set()
        self.assigned_at = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_assign(self, consumer, partitions):
        self.assigned = {p.partition for p in partitions}
        self.assigned_at = time.perf_counter()

    def _on_revoke(self, consumer, partitions):
        self.assigned = set()

    def start(self):
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            self.consumer.poll(0.05)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.consumer.close()


def wait_for(pred, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pred():
            return True
        time.sleep(0.002)
    return False


def covered(members, partitions: int, since: float = 0.0) -> bool:
    got = [m.assigned for m in members]
    union = set().union(*got)
    return (len(union) == partitions and sum(len(g) for g in got) == partitions
            and all(m.assigned_at >= since for m in members if m.assigned))


def bench_join(bootstrap, topic, partitions, n, extra):
    group = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    members = [Member(bootstrap, group, topic, extra) for _ in range(n)]
    t0 = time.perf_counter()
    for m in members:
        m.start()
    ok = wait_for(lambda: covered(members, partitions) and all(m.assigned for m in members[:partitions]), 120)
    elapsed = time.perf_counter() - t0
    return members, (elapsed if ok else None)


def bench_leave(members, partitions):
    leaver, rest = members[0], members[1:]
    t0 = time.perf_counter()
    leaver.close()
    ok = wait_for(lambda: covered(rest, partitions, since=t0), 120)
    return rest, ((time.perf_counter() - t0) if ok else None)


def bench_commit_sync(bootstrap, topic, seconds):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-commit-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    n = 0
    c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)  # coordinator lookup
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += 1
        c.commit(offsets=[TopicPartition(topic, 0, n)], asynchronous=False)
    elapsed = time.perf_counter() - t0
    c.close()
    return n / elapsed


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def bench_commit_pipelined(bootstrap, topic, seconds, inflight, partitions_per_commit=1):
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    group = f"bench-raw-{uuid.uuid4().hex[:6]}"
    version = 8

    def request(cid, api, v, body):
        sock.sendall(encode_request(api, v, body, correlation_id=cid))

    def response(api, v):
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        return decode_response(api, v, _recv_exact(sock, size))[1]

    request(0, ApiKey.FIND_COORDINATOR, 3, {"key": group, "key_type": 0})
    response(ApiKey.FIND_COORDINATOR, 3)

    def body(i):
        return {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
                "topics": [{"name": topic, "partitions": [
                    {"partition_index": p, "committed_offset": i, "committed_metadata": ""}
                    for p in range(partitions_per_commit)]}]}

    sent = done = 0
    t0 = time.perf_counter()
    while True:
        now = time.perf_counter()
        while sent - done < inflight and now - t0 < seconds:
            sent += 1
            request(sent, ApiKey.OFFSET_COMMIT, version, body(sent))
        if done == sent:
            break
        r = response(ApiKey.OFFSET_COMMIT, version)
        assert r.topics[0].partitions[0].error_code == 0, r
        done += 1
    elapsed = time.perf_counter() - t0
    sock.close()
    return done / elapsed


def _pipelined_worker(args):
    return bench_commit_pipelined(*args)


def bench_commit_parallel(bootstrap, topic, seconds, inflight, partitions_per_commit, connections):
    """Sum of pipelined rates over several client processes (the Python client is the bottleneck of one)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(connections) as pool:
        rates = pool.map(_pipelined_worker,
                         [(bootstrap, topic, seconds, inflight, partitions_per_commit)] * connections)
    return sum(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=20)
    ap.add_argument("--initial-delay", type=int, default=0, help="group.initial.rebalance.delay.ms")
    ap.add_argument("--commit-seconds", type=float, default=3.0)
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--connections", type=int, default=4, help="client processes for the pipelined commit rate")
    ap.add_argument("--heartbeat-ms", type=int, default=None,
                    help="heartbeat.interval.ms for the consumers (librdkafka default 3000)")
    args = ap.parse_args()

    proc = data = None
    bootstrap = args.bootstrap
    if not bootstrap:
        proc, bootstrap, data = start_broker(args.initial_delay)
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = f"bench-groups-{uuid.uuid4().hex[:6]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
        extra = {} if args.heartbeat_ms is None else {"heartbeat.interval.ms": args.heartbeat_ms}

        def fmt(x):
            return "timed out" if x is None else f"{x * 1000:.0f} ms"

        members, t1 = bench_join(bootstrap, topic, args.partitions, 1, extra)
        print(f"join, 1 member: first subscribe -> assigned: {fmt(t1)}")
        for m in members:
            m.close()
        members, tn = bench_join(bootstrap, topic, args.partitions, args.members, extra)
        print(f"join, {args.members} members: first subscribe -> all assigned: {fmt(tn)}")
        rest, tl = bench_leave(members, args.partitions)
        print(f"leave, 1 of {args.members}: close -> {args.members - 1} reassigned: {fmt(tl)}")
        for m in rest:
            m.close()
        rate = bench_commit_sync(bootstrap, topic, args.commit_seconds)
        print(f"OffsetCommit, synchronous (confluent-kafka): {rate:.0f} commits/s")
        for parts in (1, args.partitions):
            rate = bench_commit_parallel(bootstrap, topic, args.commit_seconds, args.inflight, parts,
                                         args.connections)
            print(f"OffsetCommit, pipelined ({args.connections} connections x {args.inflight} in flight, "
                  f"{parts} partition(s) each): {rate:.0f} requests/s")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
