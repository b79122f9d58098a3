"""Throughput of kbroker.log.PartitionLog: append and read MB/s.

Appends ``--total`` MB as 1 MB requests, each holding 16 KB record batches
(the broker's target workload), then reads everything back with 1 MB reads.
Data goes to the page cache (no fsync), as the broker does by default.

    python scripts/bench_log.py [--total 1024] [--batch-kb 16] [--request-kb 1024] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from protocol.records import encode_batch  # noqa: E402

from kbroker.log import LogConfig, PartitionLog  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=1024, help="MB to append")
    ap.add_argument("--batch-kb", type=int, default=16)
    ap.add_argument("--request-kb", type=int, default=1024)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--log-append-time", action="store_true")
    args = ap.parse_args()

    one = encode_batch([(None, os.urandom(args.batch_kb * 1024 - 80))], base_timestamp=1)
    per_request = max(1, args.request_kb * 1024 // len(one))
    template = one * per_request
    requests = max(1, args.total * 1024 * 1024 // len(template))
    root = tempfile.mkdtemp(prefix="bench-log-", dir=args.dir)
    cfg = LogConfig(segment_bytes=1 << 30)
    log = PartitionLog.open(os.path.join(root, "bench-0"), cfg)
    try:
        bufs = [bytearray(template) for _ in range(4)]
        t0 = time.perf_counter()
        for i in range(requests):
            buf = bufs[i & 3]
            log.append(buf, log_append_time_ms=int(time.time() * 1000) if args.log_append_time else None)
        t1 = time.perf_counter()
        written = requests * len(template)
        print(f"append: {written / 1e6:.0f} MB in {t1 - t0:.2f}s = {written / 1e6 / (t1 - t0):.0f} MB/s "
              f"({requests} requests of {per_request} x {len(one)} B batches, {log.num_segments} segments)")

        t0 = time.perf_counter()
        off, got, reads = 0, 0, 0
        while off < log.log_end_offset:
            r = log.read(off, 1 << 20)
            if not r.records:
                break
            got += len(r.records)
            off = r.next_offset
            reads += 1
        t1 = time.perf_counter()
        print(f"read:   {got / 1e6:.0f} MB in {t1 - t0:.2f}s = {got / 1e6 / (t1 - t0):.0f} MB/s ({reads} reads of <= 1 MB)")

        t0 = time.perf_counter()
        log.flush()
        print(f"flush:  {time.perf_counter() - t0:.2f}s")
        log.close()
        t0 = time.perf_counter()
        log = PartitionLog.open(os.path.join(root, "bench-0"), cfg)
        print(f"open (clean, indexes trusted): {time.perf_counter() - t0:.3f}s")
        log.close_without_flush()
        t0 = time.perf_counter()
        log = PartitionLog.open(os.path.join(root, "bench-0"), cfg, recover=True)
        print(f"recover (CRC check of everything): {time.perf_counter() - t0:.2f}s")
        log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
