"""Random appends / reads / reopens / truncations against a simple in-memory model."""

import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from protocol.records import encode_batch, iter_batches

from kbroker.log import OffsetOutOfRange, PartitionLog

from ._util import small_config

CFG = small_config(segment_bytes=350, index_interval_bytes=90)


class LogModel(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.dir = tempfile.mkdtemp(prefix="kblog-")
        self.path = self.dir + "/m-0"
        self.log = PartitionLog.open(self.path, CFG, now_ms=0)
        self.batches = []  # (base, last, bytes) with offsets as written
        self.start = 0
        self.end = 0
        self.ts = 0

    def teardown(self):
        if hasattr(self, "log"):
            self.log.close_without_flush()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(sizes=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 120)), min_size=1, max_size=3))
    def append(self, sizes):
        raw = bytearray()
        for n, size in sizes:
            self.ts += 1
            raw += encode_batch([(b"k", b"x" * size, (), self.ts)] * n)
        info = self.log.append(raw, now_ms=0)
        assert info.first_offset == self.end
        for pos, h in iter_batches(bytes(raw)):
            self.batches.append((h.base_offset, h.last_offset, bytes(raw[pos:pos + h.total_size])))
        self.end = self.batches[-1][1] + 1
        assert info.last_offset == self.end - 1

    @rule(data=st.data(), max_bytes=st.integers(1, 1500), min_one=st.booleans())
    def read(self, data, max_bytes, min_one):
        off = data.draw(st.integers(self.start - 2, self.end + 2))
        if off < self.start or off > self.end:
            with pytest.raises(OffsetOutOfRange):
                self.log.read(off, max_bytes, min_one_batch=min_one)
            return
        r = self.log.read(off, max_bytes, min_one_batch=min_one)
        got = bytes(r.records)
        idx = next((i for i, b in enumerate(self.batches) if b[1] >= off), None)
        if idx is None:
            assert got == b""
            return
        expected_all = b"".join(b[2] for b in self.batches[idx:])
        assert expected_all.startswith(got)
        first = self.batches[idx][2]
        if min_one:
            assert len(got) >= len(first)
        if len(got) > max_bytes:
            assert got == first
        # whole batches only
        sizes = [len(b[2]) for b in self.batches[idx:]]
        acc, cuts = 0, {0}
        for s in sizes:
            acc += s
            cuts.add(acc)
        assert len(got) in cuts

    @rule(max_bytes=st.integers(1, 700))
    def read_sequential(self, max_bytes):
        """Consumer-style reads from the previous read's next offset (position cache)."""
        off = getattr(self, "cursor", self.start)
        if off < self.start or off > self.end:
            off = self.start
        r = self.log.read(off, max_bytes)
        got = bytes(r.records)
        idx = next((i for i, b in enumerate(self.batches) if b[1] >= off), None)
        if idx is None:
            assert got == b"" and r.next_offset == off
        else:
            assert got and b"".join(b[2] for b in self.batches[idx:]).startswith(got)
            assert r.first_offset == self.batches[idx][0]
        self.cursor = r.next_offset

    @rule(clean=st.booleans())
    def reopen(self, clean):
        if clean:
            self.log.close()
        else:
            self.log.close_without_flush()
        self.log = PartitionLog.open(self.path, CFG, recover=not clean, now_ms=0)

    @rule(data=st.data())
    def delete_records(self, data):
        off = data.draw(st.integers(0, self.end))
        self.log.delete_records_before(off)
        self.start = max(self.start, off)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def truncate(self, data):
        off = data.draw(st.integers(self.start, self.end))
        if off <= self.log.segments[0].base_offset:
            # nothing of the log below off: truncated fully, restarting at off
            self.batches, self.start, self.end = [], off, off
        else:
            # cut at a batch boundary: a batch straddling off goes too
            cut = next((b[0] for b in self.batches if b[1] >= off), off)
            self.batches = [b for b in self.batches if b[1] < off]
            self.end = cut
            self.start = min(self.start, self.end)
        self.log.truncate_to(off)

    @rule()
    def roll(self):
        self.log.roll(now_ms=0)

    @rule()
    def retention_everything(self):
        cfg = self.log.config
        self.log.config = cfg.replace(retention_ms=0)
        self.log.apply_retention(now_ms=10**9)
        self.log.config = cfg
        self.start = self.end
        self.batches = []

    @invariant()
    def offsets_agree(self):
        if not hasattr(self, "log"):
            return
        assert self.log.log_end_offset == self.end
        assert self.log.log_start_offset == self.start


LogModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogModel = LogModel.TestCase
