#!/usr/bin/env python3
"""Throughput, latency and footprint of a Kafka-compatible broker, measured with librdkafka.

Targets (one or more, measured one after the other in the same run):
  --bootstrap HOST:PORT   a broker that is already running (no CPU/RSS numbers unless --pid)
  --start-kbroker         start kbroker here (data in a temporary directory on disk)
  --peers                 also start the reference peers from /work/shared/peers when present:
                          Tansu (tansu.sh PORT; needs get-tansu.sh once) and librdkafka's mock
                          cluster (rdkafka_mock.py).  Never required.

Per target it prints: produce MB/s and msgs/s for each message size (the same total bytes per
size), consume MB/s, end-to-end p50/p99 latency at a fixed rate with linger.ms=0, broker CPU
seconds per GB produced and peak RSS (from /proc/<pid>), idle RSS right after start, and the
start-up time to the first Metadata answer.  The producer and the consumer each run in a
process of their own (confluent-kafka), so the client is not sharing a core with itself.

Every phase has a deadline; a phase that runs out reports what it got, marked with '*'.

Examples:
  python scripts/bench.py --start-kbroker
  python scripts/bench.py --start-kbroker --peers --total-mb 64
  python scripts/bench.py --bootstrap 127.0.0.1:9092 --pid 12345
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
PEERS = Path(os.environ.get("KBROKER_PEERS_DIR", "/work/shared/peers"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1_000_000


# ---------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """utime + stime of a process and its waited-for children, in seconds."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def status_kb(pid: Optional[int], key: str) -> Optional[int]:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------
# Readiness: a raw Metadata v1 request (no client library involved)
# ---------------------------------------------------------------------------


def metadata_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    cid = b"kbroker-bench"
    payload = struct.pack(">hhih", 3, 1, 99, len(cid)) + cid + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(payload)) + payload)
            head = b""
            while len(head) < 8:
                chunk = s.recv(8 - len(head))
                if not chunk:
                    return False
                head += chunk
            return struct.unpack(">ii", head)[1] == 99
    except OSError:
        return False


def wait_ready(host: str, port: int, deadline: float, alive: Callable[[], bool]) -> bool:
    while time.monotonic() < deadline:
        if not alive():
            return False
        if metadata_answers(host, port):
            return True
        time.sleep(0.005)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    bootstrap: str
    pid: Optional[int] = None
    startup_s: Optional[float] = None
    idle_rss_kb: Optional[int] = None
    stop: Callable[[], None] = lambda: None
    create_topics: bool = True  # False: the server has no CreateTopics; topics are auto-created
    notes: list[str] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict)


def start_kbroker(tmp: Path) -> Target:
    port = free_port()
    data = tmp / "kbroker-data"
    log = open(tmp / "kbroker.log", "wb")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "kbroker", "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={data}", "--override", "group.initial.rebalance.delay.ms=0",
           "--log-level", "WARNING"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if not wait_ready("127.0.0.1", port, t0 + 30, lambda: proc.poll() is None):
        proc.kill()
        raise RuntimeError(f"kbroker did not start; see {tmp / 'kbroker.log'}:\n"
                           + (tmp / "kbroker.log").read_text(errors="replace")[-3000:])
    startup = time.monotonic() - t0
    time.sleep(0.5)
    return Target("kbroker", f"127.0.0.1:{port}", proc.pid, startup, status_kb(proc.pid, "VmRSS"),
                  lambda: terminate(proc))


def start_tansu(tmp: Path) -> Optional[Target]:
    script = PEERS / "tansu.sh"
    binary = Path(os.environ.get("TANSU_BIN", "/tmp/peers/tansu"))
    if not script.exists():
        return None
    if not binary.exists():
        print(f"bench: skipping Tansu: no binary at {binary} (run {PEERS / 'get-tansu.sh'} once)", file=sys.stderr)
        return None
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", str(script), str(port)], stdout=open(tmp / "tansu.log", "wb"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
                            env=dict(os.environ, TANSU_ARGS=os.environ.get("TANSU_ARGS", "")))
    if not wait_ready("127.0.0.1", port, t0 + 30, lambda: proc.poll() is None):
        terminate(proc)
        print("bench: skipping Tansu: it did not answer Metadata", file=sys.stderr)
        return None
    startup = time.monotonic() - t0
    time.sleep(0.5)
    # tansu.sh execs the binary, so the script's pid is the broker's.
    return Target("tansu", f"127.0.0.1:{port}", proc.pid, startup, status_kb(proc.pid, "VmRSS"),
                  lambda: terminate(proc))


def start_rdkafka_mock(tmp: Path) -> Optional[Target]:
    script = PEERS / "rdkafka_mock.py"
    if not script.exists():
        return None
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=open(tmp / "mock.log", "wb"),
                            stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.startswith("BOOTSTRAP="):
        terminate(proc)
        print("bench: skipping the rdkafka mock: no BOOTSTRAP line", file=sys.stderr)
        return None
    time.sleep(0.5)
    t = Target("rdkafka-mock", line.split("=", 1)[1].split(",")[0], proc.pid, None,
               status_kb(proc.pid, "VmRSS"), lambda: terminate(proc), create_topics=False)
    t.notes.append("rdkafka-mock keeps only ~5 MiB per partition and auto-creates topics with 4 partitions; "
                   "its CPU includes the client that hosts it")
    return t


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within 20 s (the other bench scripts use it too)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---------------------------------------------------------------------------
# Workers (each in its own process)
# ---------------------------------------------------------------------------


def create_topic(bootstrap: str, partitions: int, use_admin: bool = True) -> tuple[str, int]:
    """A fresh topic: CreateTopics, or auto-creation for servers without it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if use_admin:
        try:
            admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=15,
                                request_timeout=15)[name].result(20)
        except Exception as e:
            print(f"bench: CreateTopics failed ({e}); relying on auto-creation", file=sys.stderr)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=5)
        t = md.topics.get(name)
        if t is not None and t.error is None and t.partitions:
            return name, len(t.partitions)
        time.sleep(0.1)
    raise RuntimeError(f"topic {name} did not appear")


def produce_worker(bootstrap: str, topic: str, size: int, count: int, deadline_s: float, q) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000,
                  "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 1_000_000,
                  "acks": "all", "enable.idempotence": False, "message.timeout.ms": int(deadline_s * 1000) + 30000})
    payload = os.urandom(size)
    acked = [0, 0]

    def on_delivery(err, msg):
        if err is None:
            acked[0] += 1
            acked[1] += len(msg)

    start = time.monotonic()
    stop_at = start + deadline_s
    sent = 0
    produce = p.produce
    while sent < count and time.monotonic() < stop_at:
        try:
            produce(topic, payload, on_delivery=on_delivery)
            sent += 1
        except BufferError:
            p.poll(0.001)
    while len(p) and time.monotonic() < stop_at:
        p.poll(0.05)
    elapsed = time.monotonic() - start
    complete = acked[0] == count
    p.purge()
    p.flush(0)
    q.put({"msgs": acked[0], "bytes": acked[1], "seconds": elapsed, "complete": complete})


def consume_worker(bootstrap: str, topic: str, partitions: int, deadline_s: float, q) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760,
                  "queued.max.messages.kbytes": 262_144})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    eof: set[int] = set()
    n = nbytes = 0
    start = time.monotonic()
    stop_at = start + deadline_s
    first = None
    while len(eof) < partitions and time.monotonic() < stop_at:
        for m in c.consume(10000, timeout=0.2):
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    eof.add(m.partition())
                continue
            if first is None:
                first = time.monotonic()
            n += 1
            nbytes += len(m)
    elapsed = time.monotonic() - (first or start)
    c.close()
    q.put({"msgs": n, "bytes": nbytes, "seconds": elapsed, "complete": len(eof) == partitions})


def latency_consumer(bootstrap: str, topic: str, partitions: int, seconds: float, ready, q) -> None:
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
    # Make sure the assignment is live (end offsets resolved) before the producer starts.
    t_end = time.monotonic() + 5
    while time.monotonic() < t_end:
        c.consume(100, timeout=0.1)
        if all(tp.offset >= 0 for tp in c.position(c.assignment())):
            break
    ready.set()
    lat: list[float] = []
    stop_at = time.monotonic() + seconds + 15
    while time.monotonic() < stop_at:
        m = c.poll(0.1)  # returns as soon as one message is there (consume(n) would wait for n)
        if m is not None and not m.error():
            now = time.time_ns()
            v = m.value()
            if v and v[:4] == b"LAT:":
                lat.append((now - int(v[4:24])) / 1e6)
                if v[24:28] == b"LAST":
                    stop_at = min(stop_at, time.monotonic() + 2)
    c.close()
    q.put(lat)


def latency_producer(bootstrap: str, topic: str, rate: int, seconds: float, q) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    total = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        tail = b"LAST" if i == total - 1 else b"...."
        try:
            p.produce(topic, b"LAT:%020d" % time.time_ns() + tail + b"x" * 72)
        except BufferError:
            pass
        p.poll(0)
    p.flush(15)
    q.put(total)


def run_in_process(target, *args, timeout: float):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, q), daemon=True)
    proc.start()
    try:
        return q.get(timeout=timeout)
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


# ---------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------


def fmt(x: Optional[float], digits: int = 1, mark: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}" + ("*" if mark else "")


def percentile(xs: list[float], p: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_target(t: Target, args) -> None:
    r = t.results
    r["start-up to first Metadata, ms"] = fmt(t.startup_s * 1000 if t.startup_s is not None else None, 0)
    r["idle RSS, MB"] = fmt(t.idle_rss_kb / 1024 if t.idle_rss_kb else None)
    produced_bytes = 0
    cpu_used = 0.0
    for size in args.sizes:
        count = max(1, int(args.total_mb * MB / size))
        topic, parts = create_topic(t.bootstrap, args.partitions, t.create_topics)
        cpu0 = cpu_seconds(t.pid)
        res = run_in_process(produce_worker, t.bootstrap, topic, size, count, args.phase_seconds,
                             timeout=args.phase_seconds + 60)
        cpu1 = cpu_seconds(t.pid)
        if cpu0 is not None and cpu1 is not None:
            cpu_used += cpu1 - cpu0
            produced_bytes += res["bytes"]
        partial = not res["complete"]
        secs = max(res["seconds"], 1e-9)
        label = f"{size} B" if size < 1024 else f"{size // 1024} KB"
        r[f"produce {label}, MB/s"] = fmt(res["bytes"] / MB / secs, 1, partial)
        r[f"produce {label}, msgs/s"] = fmt(res["msgs"] / secs, 0, partial)
        if size == args.consume_size:
            c = run_in_process(consume_worker, t.bootstrap, topic, parts, args.phase_seconds,
                               timeout=args.phase_seconds + 60)
            r[f"consume {label}, MB/s"] = fmt(c["bytes"] / MB / max(c["seconds"], 1e-9), 1, not c["complete"])
            r[f"consume {label}, msgs read"] = fmt(c["msgs"], 0)
    r["broker CPU s per GB produced"] = fmt(cpu_used / (produced_bytes / 1e9), 2) if produced_bytes else "-"
    # latency at a fixed rate
    topic, parts = create_topic(t.bootstrap, args.partitions, t.create_topics)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ready = ctx.Event()
    cons = ctx.Process(target=latency_consumer, args=(t.bootstrap, topic, parts, args.latency_seconds, ready, q),
                       daemon=True)
    cons.start()
    ready.wait(15)
    run_in_process(latency_producer, t.bootstrap, topic, args.rate, args.latency_seconds,
                   timeout=args.latency_seconds + 40)
    try:
        lat = q.get(timeout=args.latency_seconds + 30)
    except Exception:
        lat = []
    cons.join(5)
    if cons.is_alive():
        cons.kill()
    sent = int(args.rate * args.latency_seconds)
    r[f"e2e p50 at {args.rate}/s, ms"] = fmt(percentile(lat, 50), 1)
    r[f"e2e p99 at {args.rate}/s, ms"] = fmt(percentile(lat, 99), 1)
    r[f"e2e received of {sent}"] = fmt(len(lat), 0)
    r["peak RSS (VmHWM), MB"] = fmt(status_kb(t.pid, "VmHWM") / 1024 if status_kb(t.pid, "VmHWM") else None)


def print_table(targets: list[Target]) -> None:
    rows: list[str] = []
    for t in targets:
        for k in t.results:
            if k not in rows:
                rows.append(k)
    w0 = max(len(r) for r in rows) if rows else 10
    widths = [max(len(t.name), *(len(t.results.get(r, "-")) for r in rows)) for t in targets]
    print()
    print("metric".ljust(w0) + "".join("  " + t.name.rjust(w) for t, w in zip(targets, widths)))
    print("-" * (w0 + sum(w + 2 for w in widths)))
    for r in rows:
        print(r.ljust(w0) + "".join("  " + t.results.get(r, "-").rjust(w) for t, w in zip(targets, widths)))
    print("\n* = the phase hit its deadline; the figure covers what completed.")
    for t in targets:
        for n in t.notes:
            print(f"note: {n}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--bootstrap", help="an already running broker")
    ap.add_argument("--pid", type=int, help="its pid, for CPU and RSS figures")
    ap.add_argument("--start-kbroker", action="store_true", help="start kbroker with data in a temp dir")
    ap.add_argument("--peers", action="store_true", help="also measure the peers in /work/shared/peers if present")
    ap.add_argument("--total-mb", type=float, default=256, help="MB produced per message size (default 256)")
    ap.add_argument("--sizes", default="100,1024,16384", help="message sizes in bytes (default 100,1024,16384)")
    ap.add_argument("--consume-size", type=int, default=1024, help="which size's topic to read back (default 1024)")
    ap.add_argument("--partitions", type=int, default=3, help="partitions per topic (default 3)")
    ap.add_argument("--rate", type=int, default=2000, help="messages/s for the latency phase (default 2000)")
    ap.add_argument("--latency-seconds", type=float, default=10, help="length of the latency phase (default 10)")
    ap.add_argument("--phase-seconds", type=float, default=120, help="deadline per produce/consume phase")
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.consume_size not in args.sizes:
        args.consume_size = args.sizes[0]

    tmp = Path(tempfile.mkdtemp(prefix="kbroker-bench-", dir=os.environ.get("KBROKER_BENCH_DIR")))
    targets: list[Target] = []
    try:
        if args.bootstrap:
            t = Target("given", args.bootstrap, args.pid, None, status_kb(args.pid, "VmRSS"))
            targets.append(t)
        if args.start_kbroker:
            targets.append(start_kbroker(tmp))
        if args.peers:
            for starter in (start_tansu, start_rdkafka_mock):
                t = starter(tmp)
                if t is not None:
                    targets.append(t)
        if not targets:
            ap.error("nothing to measure: give --bootstrap, --start-kbroker and/or --peers")
        for t in targets:
            print(f"bench: measuring {t.name} at {t.bootstrap} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                bench_target(t, args)
            except Exception as e:  # report and go on with the next target
                t.results["error"] = type(e).__name__
                print(f"bench: {t.name}: {e}", file=sys.stderr)
            print(f"bench: {t.name} done in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
            t.stop()
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
