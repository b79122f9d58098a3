#!/usr/bin/env python3
"""Micro-benchmarks of the wire codec (protocol/).

Usage: python scripts/bench_codec.py [--seconds S] [--profile NAME]

Prints, best of three runs of about S seconds each:

* decode of a Produce v11 request (10 partitions, 1 MiB of 16 KiB record
  batches) including CRC validation of every batch with
  protocol.records.iter_batches, in MB/s of batch bytes (target >= 1000);
* encode of a Fetch v16 response (100 partitions x 64 KiB of records), in
  MB/s, as one bytes object and as a chunk list (``chunks=True``);
* encode of a Metadata v12 response with 1,000 partitions, per second;
* decode + encode of a Heartbeat v4, per second (target >= 20,000);
* ``import protocol`` in a fresh interpreter, ms (target <= 150).

``--profile NAME`` runs one benchmark (produce, fetch, fetch-chunks,
metadata, heartbeat) under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import statistics
import subprocess
import sys
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import (  # noqa: E402
    ApiKey,
    RequestHeader,
    decode_request,
    encode_request,
    encode_response,
)
from protocol import records as R  # noqa: E402

MB = 1_000_000


def best_rate(fn, seconds: float, runs: int = 3) -> float:
    """Calls per second of ``fn``, best of ``runs`` runs of about ``seconds`` each."""
    fn()  # warm caches (schema construction, imports)
    best = 0.0
    for _ in range(runs):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            fn()
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


# -- workloads -----------------------------------------------------------------


def make_batch(size: int, seq: int) -> bytes:
    n = 16
    value = bytes((seq + i) & 255 for i in range(size // n - 40))
    records = [(f"key-{seq}-{i}".encode(), value, [("h", b"v")], 1_700_000_000_000 + i) for i in range(n)]
    batch = R.encode_batch(records, producer_id=1000, producer_epoch=0, base_sequence=seq * n)
    return batch


def produce_workload():
    batch_size = 16 * 1024
    total = 1024 * 1024
    batches = [make_batch(batch_size, i) for i in range(total // batch_size)]
    per_partition: list[list[bytes]] = [[] for _ in range(10)]
    for i, b in enumerate(batches):
        per_partition[i % 10].append(b)
    body = {
        "acks": -1,
        "timeout_ms": 30000,
        "topic_data": [
            {
                "name": "bench",
                "partition_data": [{"index": p, "records": b"".join(bs)} for p, bs in enumerate(per_partition)],
            }
        ],
    }
    frame = bytearray(encode_request(ApiKey.PRODUCE, 11, body, correlation_id=1, client_id="bench")[4:])
    batch_bytes = sum(len(b) for b in batches)

    def run():
        _, req = decode_request(frame)
        count = 0
        for topic in req.topic_data:
            for part in topic.partition_data:
                for _pos, _header in R.iter_batches(part.records):
                    count += 1
        assert count == len(batches)

    return run, batch_bytes, len(batches)


def fetch_workload(chunks: bool):
    records = [bytes([i & 255]) * (64 * 1024) for i in range(100)]
    topic_ids = [uuid.UUID(int=i + 1) for i in range(4)]
    body = {
        "session_id": 7,
        "responses": [
            {
                "topic_id": topic_ids[t],
                "partitions": [
                    {"partition_index": p, "high_watermark": 1000, "last_stable_offset": 1000,
                     "log_start_offset": 0, "records": records[t * 25 + p]}
                    for p in range(25)
                ],
            }
            for t in range(4)
        ],
    }
    header = RequestHeader(ApiKey.FETCH, 16, 9)

    def run():
        encode_response(header, body, chunks=chunks)

    return run, sum(len(r) for r in records)


def metadata_workload():
    brokers = [{"node_id": i, "host": f"broker-{i}.example.com", "port": 9092, "rack": f"rack-{i % 3}"}
               for i in range(3)]
    topics = []
    for t in range(20):
        topics.append({
            "name": f"topic-{t}",
            "topic_id": uuid.UUID(int=t + 1),
            "partitions": [
                {"partition_index": p, "leader_id": p % 3, "leader_epoch": 5,
                 "replica_nodes": [p % 3, (p + 1) % 3, (p + 2) % 3], "isr_nodes": [p % 3, (p + 1) % 3, (p + 2) % 3]}
                for p in range(50)
            ],
        })
    body = {"brokers": brokers, "cluster_id": "bench-cluster", "controller_id": 0, "topics": topics}
    header = RequestHeader(ApiKey.METADATA, 12, 3)
    assert sum(len(t["partitions"]) for t in topics) == 1000

    def run():
        encode_response(header, body)

    return run


def heartbeat_workload():
    frame = encode_request(ApiKey.HEARTBEAT, 4, {"group_id": "bench-group", "generation_id": 3,
                                                 "member_id": "consumer-1-0c9f4a7e", "group_instance_id": None},
                           correlation_id=11, client_id="bench")[4:]
    response = {"throttle_time_ms": 0, "error_code": 0}

    def run():
        header, _body = decode_request(frame)
        encode_response(header, response)

    return run


def import_time_ms(runs: int = 7) -> tuple[float, float]:
    """(median in-process import time, median whole-process overhead over a bare interpreter), ms."""
    code = "import time; t = time.perf_counter(); import protocol; print(time.perf_counter() - t)"
    inside, whole = [], []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        total = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare = time.perf_counter() - start
        inside.append(float(out.stdout) * 1000)
        whole.append((total - bare) * 1000)
    return statistics.median(inside), statistics.median(whole)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--profile", choices=["produce", "fetch", "fetch-chunks", "metadata", "heartbeat"])
    args = ap.parse_args(argv)

    produce, batch_bytes, nbatches = produce_workload()
    fetch_bytes, fetch_size = fetch_workload(False)
    fetch_chunks, _ = fetch_workload(True)
    metadata = metadata_workload()
    heartbeat = heartbeat_workload()

    if args.profile:
        fn = {"produce": produce, "fetch": fetch_bytes, "fetch-chunks": fetch_chunks,
              "metadata": metadata, "heartbeat": heartbeat}[args.profile]
        prof = cProfile.Profile()
        prof.enable()
        end = time.perf_counter() + args.seconds * 2
        while time.perf_counter() < end:
            fn()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return 0

    def line(name, value, unit, target=None, higher_is_better=True):
        mark = ""
        if target is not None:
            ok = value >= target if higher_is_better else value <= target
            mark = f"   (target {'>=' if higher_is_better else '<='} {target:,}: {'ok' if ok else 'MISSED'})"
        print(f"{name:<58} {value:>12,.1f} {unit}{mark}")

    rate = best_rate(produce, args.seconds)
    line(f"Produce v11 decode + CRC, {nbatches} x 16 KiB batches / 10 partitions", rate * batch_bytes / MB, "MB/s",
         1000)
    rate = best_rate(fetch_bytes, args.seconds)
    line("Fetch v16 response encode, 100 x 64 KiB, bytes", rate * fetch_size / MB, "MB/s")
    rate = best_rate(fetch_chunks, args.seconds)
    line("Fetch v16 response encode, 100 x 64 KiB, chunks=True", rate * fetch_size / MB, "MB/s")
    line("Metadata v12 response encode, 1,000 partitions", best_rate(metadata, args.seconds), "/s")
    line("Heartbeat v4 decode + response encode", best_rate(heartbeat, args.seconds), "/s", 20_000)
    inside, whole = import_time_ms()
    line("import protocol, fresh interpreter (import statement)", inside, "ms", 150, higher_is_better=False)
    line("import protocol, fresh interpreter (process overhead)", whole, "ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
