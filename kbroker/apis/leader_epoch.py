"""OffsetForLeaderEpoch: where a leader epoch ended, so a client can detect log truncation.

A consumer that fetched up to offset O under leader epoch E asks, after a
leader change, "what is the end offset of epoch E?".  The answer is the
start offset of the first epoch after E (or the log end offset when E is the
current epoch); if it is below O the consumer knows records were truncated.

Every batch carries the epoch of the leader that appended it
(``partition_leader_epoch``), so the epoch history of a partition is the
sequence of (epoch, first offset written in it) read off the batch headers.
:class:`EpochCache` keeps that sequence per partition log in memory: built on
first use by scanning the headers once, then extended by scanning only what
was appended since; a truncation (the log's ``generation`` changes) starts it
over.  The current leader epoch is always the last entry, starting at the
log end offset if nothing was written in it yet (Kafka records it when the
replica becomes leader).  Entries below the log start offset are cut off as
Kafka's ``truncateFromStart`` does.

Answer rules (Kafka's LeaderEpochFileCache.endOffsetFor):

* requested epoch -1 (undefined): epoch -1, offset -1;
* the latest epoch: (it, log end offset);
* above the latest: (-1, -1);
* otherwise: (largest epoch <= requested, start offset of the next epoch);
  below the earliest known epoch: (requested, start of the earliest).
"""

from __future__ import annotations

import bisect
import weakref

from protocol import ApiKey, ErrorCode

from . import handles

UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


class EpochCache:
    """(epoch, start offset) entries of one partition log, epochs increasing."""

    def __init__(self, generation: int):
        self.generation = generation
        self.epochs: list[int] = []
        self.starts: list[int] = []
        self.scanned_to = 0  # offset up to which batch headers have been read

    def _assign(self, epoch: int, start: int) -> None:
        if epoch < 0 or (self.epochs and epoch <= self.epochs[-1]):
            return
        self.epochs.append(epoch)
        self.starts.append(start)

    def scan(self, plog) -> None:
        """Read the headers of the batches appended since the last scan."""
        leo = plog.log_end_offset
        if self.scanned_to >= leo:
            return
        for seg in list(plog.segments):
            if seg.next_offset <= self.scanned_to or seg.size == 0:
                continue
            start_pos = 0
            if seg.base_offset < self.scanned_to:
                found = seg.find(self.scanned_to)
                if found is None:
                    continue
                start_pos = found[0]
            for _pos, h in seg.iter_headers(start_pos, seg.size):
                if h.last_offset < self.scanned_to:
                    continue
                self._assign(h.partition_leader_epoch, h.base_offset)
        self.scanned_to = leo

    def entries(self, log_start_offset: int, current_epoch: int, leo: int) -> tuple[list[int], list[int]]:
        """The history as Kafka would have it: cut at the log start, current epoch last."""
        epochs, starts = list(self.epochs), list(self.starts)
        # Drop epochs that ended at or before the log start; the one holding it starts there.
        i = bisect.bisect_right(starts, log_start_offset) - 1
        if i > 0:
            del epochs[:i], starts[:i]
        if starts and starts[0] < log_start_offset:
            starts[0] = log_start_offset
        if current_epoch >= 0 and (not epochs or current_epoch > epochs[-1]):
            epochs.append(current_epoch)
            starts.append(leo)
        return epochs, starts


_caches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def epoch_cache(plog) -> EpochCache:
    cache = _caches.get(plog)
    if cache is None or cache.generation != plog.generation or cache.scanned_to > plog.log_end_offset:
        cache = EpochCache(plog.generation)
        _caches[plog] = cache
    cache.scan(plog)
    return cache


def end_offset_for(epochs: list[int], starts: list[int], requested: int, leo: int) -> tuple[int, int]:
    """(epoch, end offset) for ``requested`` given the epoch history."""
    if requested == UNDEFINED_EPOCH or not epochs:
        return UNDEFINED_EPOCH, UNDEFINED_OFFSET
    if requested == epochs[-1]:
        return requested, leo
    higher = bisect.bisect_right(epochs, requested)  # first epoch > requested
    if higher >= len(epochs):
        return UNDEFINED_EPOCH, UNDEFINED_OFFSET
    if higher == 0:
        return requested, starts[0]
    return epochs[higher - 1], starts[higher]


def lookup(part, requested_epoch: int) -> tuple[int, int]:
    plog = part.log
    cache = epoch_cache(plog)
    leo = plog.log_end_offset
    epochs, starts = cache.entries(plog.log_start_offset, part.leader_epoch, leo)
    return end_offset_for(epochs, starts, requested_epoch, leo)


@handles(ApiKey.OFFSET_FOR_LEADER_EPOCH)
async def handle(broker, header, body):
    topics = []
    for t in body.topics:
        image_topic = broker.image.topics.get(t.topic)
        parts = []
        for rp in t.partitions:
            entry = {"error_code": ErrorCode.NONE, "partition": rp.partition, "leader_epoch": UNDEFINED_EPOCH,
                     "end_offset": UNDEFINED_OFFSET}
            part, err = broker.leader_partition(image_topic, rp.partition, rp.current_leader_epoch)
            if part is None:
                entry["error_code"] = err
            else:
                entry["leader_epoch"], entry["end_offset"] = lookup(part, rp.leader_epoch)
            parts.append(entry)
        topics.append({"topic": t.topic, "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}
