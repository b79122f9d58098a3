#!/usr/bin/env python3
"""Record real clients' Kafka frames through a proxy, as golden test data.

Usage:
    python scripts/capture_frames.py [--client NAME ...] [--out DIR]
                                     [--kafkajs-dir DIR] [--mock PATH]

For each client (confluent-kafka, kafka-python, aiokafka, kafkajs) this
starts a fresh librdkafka mock cluster (``rdkafka_mock.py 1 --topic
golden:1``), puts a recording TCP proxy in front of it, and runs a small
workload through the proxy: one producer per compression codec the client
supports (3 records each), then a consumer in a group that reads them,
commits and leaves.  Each request frame, and the mock's response to it, is
written to ``DIR/<client>/<NNN>_<api>_v<version>.req.bin`` / ``.resp.bin``:
the frame without its 4-byte size prefix, exactly as on the wire.  Repeats
of the same (api, version) -- plus compression for Produce -- are kept at
most ``--keep`` times, so the files stay small.

The mock's Metadata, FindCoordinator and DescribeCluster answers advertise
the mock's own address, which would let clients bypass the proxy after
bootstrapping.  The proxy therefore decodes those responses with
``protocol.decode_response``, points every broker at the proxy listener
standing in for it, and re-encodes them with ``protocol.encode_response``
before passing them on; the recorded ``.resp.bin`` is the mock's original.
A client completing its workload is thus also a test of our encoder.

kafkajs is run with node from ``--kafkajs-dir`` (a folder where ``npm
install kafkajs`` was run; never inside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import protocol  # noqa: E402
from protocol import API_INDEX, FrameReader, RequestHeader  # noqa: E402

DEFAULT_MOCK = ROOT.parent / "shared" / "peers" / "rdkafka_mock.py"
DEFAULT_OUT = ROOT / "tests" / "protocol" / "golden"
TOPIC = "golden"
GROUP = "golden-group"
CLIENTS = ("confluent-kafka", "kafka-python", "aiokafka", "kafkajs")

REWRITE_APIS = {3, 10, 60}  # Metadata, FindCoordinator, DescribeCluster


# ---------------------------------------------------------------------------
# The recording proxy
# ---------------------------------------------------------------------------


class Recorder:
    """Collects request/response frames, keeping at most ``keep`` per kind."""

    def __init__(self, keep: int):
        self.keep = keep
        self.lock = threading.Lock()
        self.entries: list[dict] = []
        self.counts: dict = {}
        self.errors: list[str] = []
        self.notes: set[str] = set()

    def request(self, frame: bytes, conn_id: int) -> dict:
        api, ver, cid = struct.unpack_from(">hhi", frame)
        kind = (api, ver, _produce_codecs(frame) if api == 0 else None)
        entry = {"api": api, "version": ver, "cid": cid, "conn": conn_id, "req": frame, "resp": None}
        with self.lock:
            n = self.counts.get(kind, 0)
            self.counts[kind] = n + 1
            entry["saved"] = n < self.keep
            if entry["saved"]:
                self.entries.append(entry)
        return entry

    def note(self, text: str):
        with self.lock:
            self.notes.add(text)

    def error(self, text: str):
        with self.lock:
            self.errors.append(text)
        print("capture: " + text, file=sys.stderr)


def _produce_codecs(frame: bytes):
    """Compression codecs of the batches in a Produce request (for de-duplication)."""
    try:
        _, body = protocol.decode_request(frame)
        codecs = set()
        for topic in body.topic_data:
            for part in topic.partition_data:
                records = part.records
                if records is not None and len(records) >= 23:
                    codecs.add(struct.unpack_from(">h", records, 21)[0] & 7)
        return tuple(sorted(codecs))
    except protocol.ProtocolError:
        return ("undecodable",)


class Proxy:
    """One listener per upstream broker; relays frames and records them."""

    def __init__(self, upstreams: list[tuple[str, int]], recorder: Recorder, host: str = "127.0.0.1"):
        self.recorder = recorder
        self.listeners = []
        self.addr_map: dict[tuple[str, int], tuple[str, int]] = {}
        self.conn_ids = iter(range(1, 1 << 30))
        self.sockets: list[socket.socket] = []
        self.closed = False
        for up in upstreams:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((host, 0))
            ls.listen(64)
            self.listeners.append((ls, up))
            self.addr_map[up] = ls.getsockname()[:2]
        for ls, up in self.listeners:
            threading.Thread(target=self._accept, args=(ls, up), daemon=True).start()

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.addr_map.values())

    def close(self):
        self.closed = True
        for ls, _ in self.listeners:
            ls.close()
        for s in list(self.sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, ls, upstream):
        while not self.closed:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(upstream, timeout=10)
                server.settimeout(None)
            except OSError as e:
                self.recorder.error(f"cannot reach {upstream}: {e}")
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sockets.append(s)
            conn_id = next(self.conn_ids)
            pending: dict[int, dict] = {}
            threading.Thread(target=self._c2s, args=(client, server, pending, conn_id), daemon=True).start()
            threading.Thread(target=self._s2c, args=(server, client, pending, conn_id), daemon=True).start()

    def _pump(self, src, dst, on_frame):
        reader = FrameReader(max_frame_size=256 * 1024 * 1024)
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                reader.feed(data)
                while (frame := reader.next_frame()) is not None:
                    out = on_frame(bytes(frame))
                    dst.sendall(out)
        except OSError:
            pass
        except Exception:
            self.recorder.error("proxy thread failed:\n" + traceback.format_exc())
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _c2s(self, client, server, pending, conn_id):
        def on_request(frame):
            entry = self.recorder.request(frame, conn_id)
            pending[entry["cid"]] = entry
            return protocol.frame(frame)

        self._pump(client, server, on_request)

    def _s2c(self, server, client, pending, conn_id):
        def on_response(frame):
            (cid,) = struct.unpack_from(">i", frame)
            entry = pending.pop(cid, None)
            if entry is None:
                self.recorder.error(f"conn {conn_id}: response to unknown correlation id {cid}")
                return protocol.frame(frame)
            entry["resp"] = frame
            if entry["api"] in REWRITE_APIS:
                return self._rewrite(entry, frame)
            if entry["api"] == 18 and entry["version"] >= 3 and frame[4:6] == b"\x00\x23":
                return self._api_versions_fallback(entry, frame)
            return protocol.frame(frame)

        self._pump(server, client, on_response)

    def _api_versions_fallback(self, entry, frame):
        """Answer an ApiVersions version the mock does not support the way Kafka does.

        The mock (its ApiVersions max is 2) answers v3+ with error 35 in a
        hand-made layout (an int8 count, entries without tagged sections, no
        tagged section) that only librdkafka reads; kafka-python gives up on
        it.  Kafka answers in the v0 layout, listing its ApiVersions range:
        rebuild that from the mock's range with our codec.
        """
        count = frame[6]
        if count < 1 or len(frame) < 13:
            self.recorder.error(f"unexpected ApiVersions error answer {frame.hex()}")
            return protocol.frame(frame)
        api_key, lo, hi = struct.unpack_from(">hhh", frame, 7)
        self.recorder.note(f"ApiVersions v{entry['version']} error answer rebuilt in the v0 layout")
        body = protocol.api_versions_fallback_body([{"api_key": api_key, "min_version": lo, "max_version": hi}])
        return protocol.encode_response(RequestHeader(18, 0, entry["cid"]), body)

    def _rewrite(self, entry, frame):
        api, ver = entry["api"], entry["version"]
        trailing = b""
        try:
            cid, body = protocol.decode_response(api, ver, frame)
        except protocol.ProtocolError as e:
            # The librdkafka mock ends some flexible responses with a second,
            # empty tagged-field section (Metadata v13: one extra 0 byte);
            # clients ignore it.  Decode without it, and pass it on unchanged.
            for k in range(1, 4):
                try:
                    cid, body = protocol.decode_response(api, ver, frame[:-k])
                except protocol.ProtocolError:
                    continue
                trailing = frame[-k:]
                self.recorder.note(f"{API_INDEX[api].name} v{ver} response: {k} trailing byte(s) {trailing.hex()}")
                break
            else:
                self.recorder.error(f"cannot decode {API_INDEX[api].name} v{ver} response: {e}")
                return protocol.frame(frame)

        def fix(obj, host_key="host", port_key="port"):
            addr = self.addr_map.get((obj[host_key], obj[port_key]))
            if addr is not None:
                obj[host_key], obj[port_key] = addr

        if api == 3 or api == 60:  # Metadata, DescribeCluster
            for broker in body.brokers:
                fix(broker)
        elif api == 10:  # FindCoordinator: top-level before v4, a list from v4
            if ver < 4:
                if body.host:
                    fix(body)
            for coordinator in body.coordinators:
                fix(coordinator)
        out = protocol.encode_response(RequestHeader(api, ver, cid), body)
        if trailing:
            out = struct.pack(">i", len(out) - 4 + len(trailing)) + out[4:] + trailing
        return out


# ---------------------------------------------------------------------------
# Workloads (each run in its own process)
# ---------------------------------------------------------------------------


def _payload(codec: str, i: int) -> bytes:
    return f"{codec} record {i} ".encode() * 4


def workload_confluent(bootstrap: str):
    from confluent_kafka import Consumer, Producer

    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    for codec in codecs:
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 50,
                      "client.id": f"golden-confluent-{codec}", "enable.idempotence": codec == "zstd"})
        for i in range(3):
            p.produce(TOPIC, key=f"k{i}".encode(), value=_payload(codec, i), headers=[("h", b"v")])
        assert p.flush(20) == 0, "produce did not finish"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "client.id": "golden-confluent-consumer",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "heartbeat.interval.ms": 200, "session.timeout.ms": 6000})
    c.subscribe([TOPIC])
    got = _poll_until(lambda: c.poll(0.5), lambda m: m is not None and not m.error(), 3 * len(codecs))
    c.commit(asynchronous=False)
    c.committed(c.assignment(), timeout=10)
    time.sleep(1.0)
    c.close()
    return got


def _poll_until(poll, ok, want, timeout=30):
    got = 0
    deadline = time.time() + timeout
    while got < want and time.time() < deadline:
        if ok(poll()):
            got += 1
    assert got >= want, f"consumed {got} of {want}"
    return got


def workload_kafka_python(bootstrap: str):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    codecs = [None, "gzip", "snappy", "lz4", "zstd"]
    for codec in codecs:
        p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50,
                          client_id=f"golden-kafka-python-{codec or 'none'}")
        for i in range(3):
            p.send(TOPIC, key=f"k{i}".encode(), value=_payload(codec or "none", i), headers=[("h", b"v")])
        p.flush(20)
        p.close()
    # The mock reads JoinGroup/SyncGroup arrays with classic int32 counts even
    # in their flexible versions (JoinGroup v6+, SyncGroup v4+), so it drops a
    # kafka-python 3.0 consumer's JoinGroup v6.  api_version=(2, 3) keeps the
    # consumer on the last classic versions (JoinGroup v5, SyncGroup v3).
    c = KafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=GROUP, client_id="golden-kafka-python-consumer",
                      auto_offset_reset="earliest", enable_auto_commit=False, heartbeat_interval_ms=200,
                      session_timeout_ms=6000, api_version=(2, 3))
    got = 0
    deadline = time.time() + 30
    while got < 3 * len(codecs) and time.time() < deadline:
        for records in c.poll(timeout_ms=500).values():
            got += len(records)
    assert got >= 3 * len(codecs), f"consumed {got}"
    c.commit()
    c.committed(TopicPartition(TOPIC, 0))
    time.sleep(1.0)
    c.close()
    return got


def workload_aiokafka(bootstrap: str):
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    codecs = [None, "gzip", "snappy", "lz4", "zstd"]

    async def main():
        for codec in codecs:
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50,
                                 client_id=f"golden-aiokafka-{codec or 'none'}")
            await p.start()
            try:
                futures = [await p.send(TOPIC, key=f"k{i}".encode(), value=_payload(codec or "none", i),
                                        headers=[("h", b"v")]) for i in range(3)]
                await asyncio.gather(*futures)
            finally:
                await p.stop()
        c = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=GROUP,
                             client_id="golden-aiokafka-consumer", auto_offset_reset="earliest",
                             enable_auto_commit=False, heartbeat_interval_ms=200, session_timeout_ms=6000)
        await c.start()
        try:
            got = 0
            deadline = time.time() + 30
            while got < 3 * len(codecs) and time.time() < deadline:
                for records in (await c.getmany(timeout_ms=500)).values():
                    got += len(records)
            assert got >= 3 * len(codecs), f"consumed {got}"
            await c.commit()
            await c.committed(TopicPartition(TOPIC, 0))
            await asyncio.sleep(1.0)
        finally:
            await c.stop()
        return got

    return asyncio.run(main())


KAFKAJS_SCRIPT = r"""
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');
const bootstrap = process.argv[2].split(',');
const kafka = new Kafka({ clientId: 'golden-kafkajs', brokers: bootstrap, logLevel: logLevel.ERROR });
const codecs = [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP]];
(async () => {
  for (const [name, codec] of codecs) {
    const producer = kafka.producer();
    await producer.connect();
    const messages = [0, 1, 2].map(i => ({ key: 'k' + i, value: (name + ' record ' + i + ' ').repeat(4),
                                             headers: { h: 'v' } }));
    await producer.send({ topic: 'golden', compression: codec, messages });
    await producer.disconnect();
  }
  const consumer = kafka.consumer({ groupId: 'golden-group', heartbeatInterval: 200, sessionTimeout: 6000 });
  await consumer.connect();
  await consumer.subscribe({ topics: ['golden'], fromBeginning: true });
  let got = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('consumed ' + got)), 30000);
    consumer.run({ autoCommit: false, eachMessage: async ({ topic, partition, message }) => {
      got += 1;
      if (got === 3 * codecs.length) {
        await consumer.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
        clearTimeout(timer);
        resolve();
      }
    } });
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.fetchOffsets({ groupId: 'golden-group', topics: ['golden'] });
  await admin.disconnect();
  await new Promise(r => setTimeout(r, 1000));
  await consumer.disconnect();
  console.log('consumed ' + got);
})().catch(e => { console.error(e); process.exit(1); });
"""


def run_workload(client: str, bootstrap: str, kafkajs_dir: pathlib.Path | None, timeout: float = 120):
    if client == "kafkajs":
        if kafkajs_dir is None or not (kafkajs_dir / "node_modules" / "kafkajs").is_dir():
            raise SystemExit("kafkajs: pass --kafkajs-dir, a folder where `npm install kafkajs` was run")
        with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as f:
            f.write(KAFKAJS_SCRIPT)
        try:
            env = dict(os.environ, NODE_PATH=str(kafkajs_dir / "node_modules"))
            proc = subprocess.run(["node", f.name, bootstrap], env=env, capture_output=True, text=True,
                                  timeout=timeout)
        finally:
            os.unlink(f.name)
    else:
        proc = subprocess.run([sys.executable, __file__, "--run-workload", client, "--bootstrap", bootstrap],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{client} workload failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


WORKLOADS = {
    "confluent-kafka": workload_confluent,
    "kafka-python": workload_kafka_python,
    "aiokafka": workload_aiokafka,
}


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def start_mock(mock: pathlib.Path):
    proc = subprocess.Popen([sys.executable, str(mock), "1", "--topic", f"{TOPIC}:1"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("BOOTSTRAP="):
        proc.kill()
        raise RuntimeError(f"mock did not start: {line!r}")
    upstreams = []
    for hp in line[len("BOOTSTRAP="):].split(","):
        host, port = hp.rsplit(":", 1)
        upstreams.append((host, int(port)))
    return proc, upstreams


def client_version(client: str, kafkajs_dir) -> str:
    if client == "confluent-kafka":
        import confluent_kafka

        return f"confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"
    if client == "kafka-python":
        import kafka

        return f"kafka-python {kafka.__version__}"
    if client == "aiokafka":
        import aiokafka

        return f"aiokafka {aiokafka.__version__}"
    pkg = json.loads((kafkajs_dir / "node_modules" / "kafkajs" / "package.json").read_text())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return f"kafkajs {pkg['version']} (node {node})"


def capture(client: str, out: pathlib.Path, mock: pathlib.Path, keep: int, kafkajs_dir) -> list[str]:
    mock_proc, upstreams = start_mock(mock)
    recorder = Recorder(keep)
    proxy = Proxy(upstreams, recorder)
    try:
        result = run_workload(client, proxy.bootstrap, kafkajs_dir)
        time.sleep(0.3)
    finally:
        proxy.close()
        mock_proc.terminate()
        try:
            mock_proc.wait(10)
        except subprocess.TimeoutExpired:
            mock_proc.kill()
    if recorder.errors:
        raise RuntimeError(f"{client}: proxy errors: {recorder.errors}")
    folder = out / client
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = []
    for n, entry in enumerate(recorder.entries):
        api = API_INDEX[entry["api"]].module if entry["api"] in API_INDEX else f"api{entry['api']}"
        stem = f"{n:03d}_{api}_v{entry['version']}"
        (folder / f"{stem}.req.bin").write_bytes(entry["req"])
        if entry["resp"] is not None:
            (folder / f"{stem}.resp.bin").write_bytes(entry["resp"])
        names.append(stem + ("" if entry["resp"] is not None else " (no response)"))
    print(f"{client}: {client_version(client, kafkajs_dir)}; {result}; {len(names)} requests kept "
          f"of {sum(recorder.counts.values())} seen")
    for note in sorted(recorder.notes):
        print(f"    note: {note}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", action="append", choices=CLIENTS, help="default: all")
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    ap.add_argument("--mock", type=pathlib.Path, default=DEFAULT_MOCK)
    ap.add_argument("--keep", type=int, default=2, help="frames kept per (api, version[, compression])")
    ap.add_argument("--kafkajs-dir", type=pathlib.Path)
    ap.add_argument("--run-workload", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_workload:
        print(f"consumed {WORKLOADS[args.run_workload](args.bootstrap)}")
        return 0
    for client in args.client or CLIENTS:
        names = capture(client, args.out, args.mock, args.keep, args.kafkajs_dir)
        for name in names:
            print("   ", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
