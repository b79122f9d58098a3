"""What large admin requests cost a real kbroker, and what they cost everyone else.

Starts a private kbroker process and, for each request below, prints how long
its answer took and the worst wait a probe client (ApiVersions in a loop on
its own connection) saw meanwhile -- the figure that says whether one client
froze the others:

* CreateTopics with 1,000,000 partitions, validate_only (Kafka's cap refuses it);
* CreateTopics with 40,000 invalid names;
* Metadata naming 100,000 unknown topics (decoded and answered in a worker);
* Metadata auto-creating N one-partition topics (default 5,000: exactly
  Kafka's 10,000-record cap, so they are created);
* CreateTopics of N one-partition topics.

    python scripts/bench_admin.py [--topics 5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from protocol import ApiKey, FrameReader, decode_response, encode_request  # noqa: E402

from bench import terminate  # noqa: E402  (scripts/ is on sys.path: this file's folder)


class Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.frames = FrameReader(1 << 30)
        self.corr = 0

    def call(self, api, version, body, timeout=120.0):
        self.corr += 1
        self.sock.settimeout(timeout)
        self.sock.sendall(encode_request(api, version, body, correlation_id=self.corr))
        while (frame := self.frames.next_frame()) is None:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed by the broker")
            self.frames.feed(data)
        return decode_response(api, version, frame)[1]


class Probe(threading.Thread):
    """ApiVersions round trips on a connection of its own; remembers the slowest."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.conn = Conn(port)
        self.worst = 0.0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            self.conn.call(ApiKey.API_VERSIONS, 3, {})
            self.worst = max(self.worst, time.perf_counter() - t)
            time.sleep(0.005)


def measure(port: int, label: str, api, version, body) -> None:
    probe = Probe(port)
    probe.start()
    conn = Conn(port)
    t = time.perf_counter()
    try:
        conn.call(api, version, body)
        outcome = "answered"
    except ConnectionError:
        outcome = "closed"
    took = time.perf_counter() - t
    probe.stop.set()
    probe.join()
    print(f"{label:<52} {outcome:>8} in {took:6.2f} s   probe worst {probe.worst * 1000:7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=5000, help="topics for the creation cases (default 5000)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbroker", "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
         "--override", f"log.dirs={tmp / 'data'}", "--log-level", "WARNING"],
        env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp / "log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                Conn(port).call(ApiKey.API_VERSIONS, 3, {})
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("kbroker did not start")
                time.sleep(0.05)

        def topic(name, partitions=1):
            return {"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [], "configs": []}

        measure(port, "CreateTopics, 1,000,000 partitions, validate_only", ApiKey.CREATE_TOPICS, 7,
                {"topics": [topic("huge", 1_000_000)], "timeout_ms": 30000, "validate_only": True})
        measure(port, "CreateTopics, 40,000 invalid names", ApiKey.CREATE_TOPICS, 7,
                {"topics": [topic(f"bad name {i}") for i in range(40_000)], "timeout_ms": 30000, "validate_only": False})
        measure(port, "Metadata, 100,000 unknown topics (no auto-create)", ApiKey.METADATA, 12,
                {"topics": [{"name": f"absent-{i}"} for i in range(99_990)], "allow_auto_topic_creation": False})
        measure(port, f"Metadata auto-creating {args.topics:,} topics", ApiKey.METADATA, 12,
                {"topics": [{"name": f"auto-{i}"} for i in range(args.topics)], "allow_auto_topic_creation": True})
        measure(port, f"CreateTopics, {args.topics:,} one-partition topics", ApiKey.CREATE_TOPICS, 7,
                {"topics": [topic(f"created-{i}") for i in range(args.topics)], "timeout_ms": 30000,
                 "validate_only": False})
    finally:
        terminate(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
