#!/usr/bin/env python3
"""How fast a broker serves Metadata, and how soon a brand-new client can produce.

Starts a private kbroker process (and the Tansu peer from /work/shared/peers when its
binary is there, unless --no-peers), creates TOPICS x PARTITIONS topics on each, then
measures, one target after the other on the same machine:

(a) all-topics Metadata in a loop: one raw-socket client sends Metadata (topics = null)
    and waits for each answer before sending the next, for --seconds, in v12 (what
    librdkafka sends) and v1 (kafka-python).  Prints answers/s and the broker's CPU
    milliseconds per answer (utime + stime from /proc, so it is the broker's own cost,
    not the client's).  The client never decodes the answers it times (a Python decode
    of 200 partitions would cost as much as the broker's encode); the first answer is
    decoded once to check it lists every topic.

(a2) the same v12 loop while a second connection keeps changing the image (creates and
    deletes one scratch topic, back to back): the cluster-change storm, where every answer
    may follow a new image version.  Prints answers/s and how many changes were made.

(b) new-client latency: --clients times, a raw client connects, sends ApiVersions v3,
    Metadata for one topic, and one Produce (acks=1, one small record), and closes;
    prints the median and p99 of connect -> produce answer.

(c) optionally (--confluent N) the same through confluent-kafka: a new Producer,
    produce one message, flush (connect -> delivery report), N times.

No asserts: it prints numbers.  Compare ratios from one run; the machine is shared.

    python scripts/bench_metadata.py [--seconds 5] [--clients 200] [--confluent 20] [--no-peers] [--no-churn]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from protocol import ApiKey, decode_response, encode_request  # noqa: E402
from protocol.records import encode_batch  # noqa: E402

from bench import terminate  # noqa: E402  (scripts/ is on sys.path: this file's folder)

PEERS = Path(os.environ.get("KBROKER_PEERS_DIR", "/work/shared/peers"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
_SIZE = struct.Struct(">i")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Raw:
    """A blocking Kafka connection that returns answer frames undecoded."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.corr = 0

    def _exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise ConnectionError("closed by the broker")
            got += k
        return buf

    def send(self, data: bytes) -> bytearray:
        self.sock.sendall(data)
        return self._exact(_SIZE.unpack(self._exact(4))[0])

    def call(self, api, version, body):
        self.corr += 1
        frame = self.send(encode_request(api, version, body, correlation_id=self.corr, client_id="bench-metadata"))
        return decode_response(api, version, frame)[1]

    def close(self) -> None:
        self.sock.close()


def wait_ready(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            c = Raw(port, timeout=1)
            c.call(ApiKey.METADATA, 1, {"topics": []})
            c.close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the broker did not start")
            time.sleep(0.02)


def start_kbroker(tmp: Path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbroker", "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
         "--override", f"log.dirs={tmp / 'kbroker-data'}", "--log-level", "WARNING"],
        env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(tmp / "kbroker.log", "wb"))
    wait_ready(port, proc)
    return "kbroker", port, proc


def start_tansu(tmp: Path):
    script = PEERS / "tansu.sh"
    binary = Path(os.environ.get("TANSU_BIN", "/tmp/peers/tansu"))
    if not script.exists() or not binary.exists():
        print(f"bench_metadata: no Tansu (needs {script} and {binary}; run get-tansu.sh once); "
              "measuring kbroker only", file=sys.stderr)
        return None
    port = free_port()
    # tansu.sh execs the binary, so this pid is the broker's.
    proc = subprocess.Popen(["bash", str(script), str(port)], cwd=tmp, stdin=subprocess.DEVNULL,
                            stdout=open(tmp / "tansu.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
    except SystemExit:
        terminate(proc)
        print("bench_metadata: Tansu did not start; measuring kbroker only", file=sys.stderr)
        return None
    return "tansu", port, proc


def versions(port: int) -> dict[int, tuple[int, int]]:
    c = Raw(port)
    body = c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "bench", "client_software_version": "1"})
    c.close()
    return {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}


def pick(rng: tuple[int, int] | None, want: int) -> int:
    if rng is None:
        raise SystemExit("the broker does not serve an API this benchmark needs")
    return max(rng[0], min(rng[1], want))


def create_topics(port: int, vers, n: int, partitions: int) -> list[str]:
    names = [f"md-bench-{i:03d}" for i in range(n)]
    c = Raw(port)
    v = pick(vers.get(ApiKey.CREATE_TOPICS), 7)
    c.call(ApiKey.CREATE_TOPICS, v, {
        "topics": [{"name": t, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
                    "configs": []} for t in names],
        "timeout_ms": 30000, "validate_only": False})
    # Wait until every topic has a leader for every partition.
    deadline = time.monotonic() + 30
    while True:
        md = c.call(ApiKey.METADATA, 1, {"topics": [{"name": t} for t in names]})
        ready = sum(1 for t in md.topics if t.error_code == 0 and len(t.partitions) == partitions
                    and all(p.leader_id >= 0 for p in t.partitions))
        if ready == n:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {ready} of {n} topics became ready")
        time.sleep(0.1)
    c.close()
    return names


def metadata_loop(port: int, pid: int, version: int, seconds: float, expect_topics: int) -> tuple[float, float]:
    """(answers per second, broker CPU ms per answer) for one client in a request/answer loop."""
    c = Raw(port)
    body = {"topics": None}
    if version >= 4:
        body["allow_auto_topic_creation"] = False
    first = c.call(ApiKey.METADATA, version, body)
    if len(first.topics) < expect_topics:
        raise SystemExit(f"all-topics Metadata v{version} listed {len(first.topics)} topics, expected {expect_topics}")
    # The same request bytes every time (a fixed correlation id): the broker's
    # work does not depend on it, and the client's per-answer cost stays tiny.
    request = encode_request(ApiKey.METADATA, version, body, correlation_id=7, client_id="bench-metadata")
    for _ in range(50):  # warm up
        c.send(request)
    n = 0
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(20):
            c.send(request)
        n += 20
        now = time.perf_counter()
        if now >= end:
            break
    elapsed = now - t0
    cpu = cpu_seconds(pid) - cpu0
    c.close()
    return n / elapsed, cpu * 1000 / n


def metadata_loop_under_churn(port: int, pid: int, vers, seconds: float, expect_topics: int):
    """(answers/s, broker CPU ms per answer, image changes made) with a writer churning a topic."""
    import threading

    stop = threading.Event()
    changes = [0]
    cv = pick(vers.get(ApiKey.CREATE_TOPICS), 7)
    dv = pick(vers.get(ApiKey.DELETE_TOPICS), 6)

    def churn():
        c = Raw(port)
        while not stop.is_set():
            c.call(ApiKey.CREATE_TOPICS, cv, {
                "topics": [{"name": "md-bench-churn", "num_partitions": 4, "replication_factor": 1,
                            "assignments": [], "configs": []}], "timeout_ms": 30000, "validate_only": False})
            which = {"topics": [{"name": "md-bench-churn"}]} if dv >= 6 else {"topic_names": ["md-bench-churn"]}
            c.call(ApiKey.DELETE_TOPICS, dv, {**which, "timeout_ms": 30000})
            changes[0] += 2
        c.close()

    t = threading.Thread(target=churn, daemon=True)
    t.start()
    try:
        rate, cpu = metadata_loop(port, pid, 12, seconds, expect_topics)
    finally:
        stop.set()
        t.join()
    return rate, cpu, changes[0]


def new_clients(port: int, vers, topic: str, partitions: int, count: int) -> list[float]:
    """Milliseconds from connect to the first Produce answer, one fresh connection each."""
    mv = pick(vers.get(ApiKey.METADATA), 12)
    pv = pick(vers.get(ApiKey.PRODUCE), 9)
    batch = encode_batch([(None, b"x" * 100)])
    out = []
    for i in range(count):
        t0 = time.perf_counter()
        c = Raw(port)
        c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "bench", "client_software_version": "1"})
        md = c.call(ApiKey.METADATA, mv, {"topics": [{"name": topic}], "allow_auto_topic_creation": False})
        part = i % partitions
        if md.topics[0].error_code != 0:
            raise SystemExit(f"Metadata for {topic}: error {md.topics[0].error_code}")
        answer = c.call(ApiKey.PRODUCE, pv, {
            "acks": 1, "timeout_ms": 30000,
            "topic_data": [{"name": topic, "partition_data": [{"index": part, "records": batch}]}]})
        took = (time.perf_counter() - t0) * 1000
        err = answer.responses[0].partition_responses[0].error_code
        if err:
            raise SystemExit(f"Produce answered error {err}")
        c.close()
        out.append(took)
    return out


def confluent_clients(port: int, topic: str, count: int) -> list[float]:
    from confluent_kafka import Producer

    out = []
    for _ in range(count):
        done = []
        t0 = time.perf_counter()
        p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "linger.ms": 0, "acks": 1})
        p.produce(topic, b"x" * 100, on_delivery=lambda err, msg: done.append(err))
        p.flush(30)
        took = (time.perf_counter() - t0) * 1000
        if not done or done[0] is not None:
            raise SystemExit(f"confluent-kafka delivery failed: {done}")
        out.append(took)
        del p
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each Metadata loop")
    ap.add_argument("--clients", type=int, default=200, help="raw new clients")
    ap.add_argument("--confluent", type=int, default=0, help="confluent-kafka new clients (0: skip)")
    ap.add_argument("--no-peers", action="store_true", help="measure kbroker only")
    ap.add_argument("--no-churn", action="store_true", help="skip the loop under image changes")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-metadata-"))
    starters = [start_kbroker] + ([] if args.no_peers else [start_tansu])
    rows = []
    try:
        for start in starters:
            target = start(tmp)
            if target is None:
                continue
            name, port, proc = target
            try:
                vers = versions(port)
                names = create_topics(port, vers, args.topics, args.partitions)
                row = {"target": name}
                for v in (12, 1):
                    mv = vers.get(ApiKey.METADATA)
                    if mv is None or not mv[0] <= v <= mv[1]:
                        row[f"v{v}"] = None
                        continue
                    row[f"v{v}"] = metadata_loop(port, proc.pid, v, args.seconds, args.topics)
                if not args.no_churn:
                    row["churn"] = metadata_loop_under_churn(port, proc.pid, vers, args.seconds, args.topics)
                row["raw"] = new_clients(port, vers, names[0], args.partitions, args.clients)
                if args.confluent:
                    row["confluent"] = confluent_clients(port, names[1], args.confluent)
                rows.append(row)
            finally:
                terminate(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nall-topics Metadata, {args.topics} topics x {args.partitions} partitions, one client, "
          f"{args.seconds:g} s per loop; new clients: connect + ApiVersions + Metadata + Produce (acks=1)")
    for row in rows:
        print(f"\n[{row['target']}]")
        for v in (12, 1):
            r = row[f"v{v}"]
            if r is None:
                print(f"  Metadata v{v:<2} all topics: not served")
            else:
                print(f"  Metadata v{v:<2} all topics: {r[0]:8.0f} answers/s   broker CPU {r[1]:.3f} ms/answer")
        if "churn" in row:
            r = row["churn"]
            print(f"  Metadata v12 all topics, image changing: {r[0]:8.0f} answers/s   broker CPU {r[1]:.3f} ms/answer"
                  f"   ({r[2]} topic creations/deletions meanwhile)")
        raw = row["raw"]
        print(f"  new raw client -> produce answer ({len(raw)}): median {statistics.median(raw):6.2f} ms   "
              f"p99 {pct(raw, 99):6.2f} ms")
        if "confluent" in row:
            cf = row["confluent"]
            print(f"  new confluent-kafka producer -> delivery ({len(cf)}): median {statistics.median(cf):6.2f} ms   "
                  f"p99 {pct(cf, 99):6.2f} ms")


if __name__ == "__main__":
    main()
