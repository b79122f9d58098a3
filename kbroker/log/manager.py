"""All partition logs of a broker across its ``log.dirs`` (Kafka's LogManager).

* Start-up: every ``<topic>-<partition>`` directory under each log dir is
  opened.  A log dir holding the ``.kbroker_clean_shutdown`` marker was shut
  down cleanly and its logs open fast (indexes trusted after a sanity check);
  otherwise every log there is recovered (CRC check from its recovery point,
  torn tail cut off).  The marker is removed at start-up and written again by
  :meth:`LogManager.close`.
* Deleting a partition renames its directory to
  ``<topic>-<partition>.<uuid>-delete`` at once (so it vanishes from the
  broker's view atomically) and removes it later, in a worker thread, from a
  background task (or at the next start-up).
* Background trio tasks: retention, compaction, flushing.  Disk work that may
  take milliseconds (fsync, unlinking big files, compaction) runs in
  ``trio.to_thread.run_sync``; the logs themselves are only touched from the
  trio thread.  A pass over thousands of logs yields to other tasks every
  few milliseconds (:data:`SLICE_SECONDS`), so no pass stalls the clients.
* Failures (Kafka's LogDirFailureChannel): an OSError in any log is a
  failure of its *log dir*.  :meth:`LogManager.mark_offline` flags every log
  there; from then on they answer KAFKA_STORAGE_ERROR (produce, fetch, list
  offsets), the background tasks skip them, new partitions go to the other
  dirs, and no clean-shutdown marker is written for the dir, so the next
  start recovers it.  Everything in the other dirs keeps being served.  The
  background loops are fault boundaries: an unexpected exception is logged
  with its traceback, the other logs of the pass still get their turn, and
  the loop runs again after its interval -- a bug or a full disk never ends
  the process.  A log whose compaction raises something unexpected is
  marked uncleanable (as Kafka's cleaner does) instead of failing each pass.

Directory names: the partition number follows the *last* ``-``, so topics with
``-``, ``.`` and ``_`` in their names parse correctly.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections import Counter
from typing import Callable, Iterator

import trio

from ..crashpoints import crash_point
from .config import LogConfig
from .errors import KafkaStorageError
from .partition_log import PartitionLog, _fsync_dir, log_dir_name, parse_log_dir_name

CLEAN_SHUTDOWN_FILE = ".kbroker_clean_shutdown"
# Longest a background pass keeps the trio thread before letting others run.
SLICE_SECONDS = 0.005
DELETE_DIR_SUFFIX = "-delete"
PRODUCER_ID_EXPIRATION_MS = 86400000

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class LogManager:
    """Owns every :class:`PartitionLog` of this broker."""

    def __init__(
        self,
        log_dirs: list[str],
        default_config: LogConfig,
        *,
        topic_config: Callable[[str], LogConfig | None] | None = None,
        producer_id_expiration_ms: int = PRODUCER_ID_EXPIRATION_MS,
        load: bool = True,
    ) -> None:
        if not log_dirs:
            raise ValueError("at least one log dir is required")
        self.log_dirs = [os.path.abspath(d) for d in log_dirs]
        self.default_config = default_config
        self._topic_config_fn = topic_config
        self._topic_configs: dict[str, LogConfig] = {}
        self.producer_id_expiration_ms = producer_id_expiration_ms
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self._logs_per_dir: Counter[str] = Counter()
        self.had_clean_shutdown: dict[str, bool] = {}
        self._pending_dir_deletions: list[str] = []
        # (topic, partition) -> high watermark; bounds retention and compaction
        self.high_watermark: Callable[[str, int], int | None] | None = None
        # log dir -> why it went offline
        self.offline_dirs: dict[str, str] = {}
        # logs the cleaner gave up on (Kafka's "uncleanable partitions")
        self.uncleanable: set[tuple[str, int]] = set()
        self.closed = False
        if load:
            self.load_logs()

    # ------------------------------------------------------------------ start-up

    def load_logs(self, now_ms: int | None = None) -> None:
        """Open every partition log found in the log dirs (see module doc)."""
        now = _now_ms() if now_ms is None else now_ms
        for d in self.log_dirs:
            os.makedirs(d, exist_ok=True)
            marker = os.path.join(d, CLEAN_SHUTDOWN_FILE)
            clean = os.path.exists(marker)
            self.had_clean_shutdown[d] = clean
            for name in sorted(os.listdir(d)):
                full = os.path.join(d, name)
                if not os.path.isdir(full):
                    continue
                if name.endswith(DELETE_DIR_SUFFIX):
                    self._pending_dir_deletions.append(full)
                    continue
                parsed = parse_log_dir_name(name)
                if parsed is None:
                    continue
                if parsed in self.logs:
                    raise KafkaStorageError(
                        f"partition {parsed[0]}-{parsed[1]} found in two log dirs: "
                        f"{self.logs[parsed].path} and {full}"
                    )
                cfg = self.config_for(parsed[0])
                log = PartitionLog.open(full, cfg, recover=not clean, now_ms=now)
                log.on_storage_error = self._log_failed
                self.logs[parsed] = log
                self._logs_per_dir[d] += 1
            # from now on a crash must be detected: drop the marker
            if clean:
                os.unlink(marker)
                _fsync_dir(d)

    # ------------------------------------------------------------------ lookup / create / delete

    def config_for(self, topic: str) -> LogConfig:
        cfg = self._topic_configs.get(topic)
        if cfg is None and self._topic_config_fn is not None:
            cfg = self._topic_config_fn(topic)
        return cfg if cfg is not None else self.default_config

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get((topic, partition))

    def __iter__(self) -> Iterator[tuple[tuple[str, int], PartitionLog]]:
        return iter(list(self.logs.items()))

    def __len__(self) -> int:
        return len(self.logs)

    def create(self, topic: str, partition: int, config: LogConfig | None = None,
               *, log_dir: str | None = None, now_ms: int | None = None) -> PartitionLog:
        """Get or create the log of a partition (in the log dir with fewest logs)."""
        existing = self.logs.get((topic, partition))
        if existing is not None:
            if config is not None:
                self._topic_configs[topic] = config
                existing.update_config(config)
            return existing
        if config is not None:
            self._topic_configs[topic] = config
        cfg = self.config_for(topic)
        online = [d for d in self.log_dirs if d not in self.offline_dirs]
        if log_dir is None:
            if not online:
                raise KafkaStorageError("every log dir is offline")
            # Counted as logs come and go: a scan per create made creating
            # thousands of partitions quadratic.
            log_dir = min(online, key=lambda d: (self._logs_per_dir[d], self.log_dirs.index(d)))
        elif os.path.abspath(log_dir) in self.offline_dirs:
            raise KafkaStorageError(f"log dir {log_dir} is offline")
        path = os.path.join(log_dir, log_dir_name(topic, partition))
        try:
            log = PartitionLog.open(path, cfg, recover=False, now_ms=now_ms)
        except OSError as e:
            self.mark_offline(os.path.abspath(log_dir), f"creating {path} failed: {e}")
            raise KafkaStorageError(f"{path}: create failed: {e}") from e
        log.on_storage_error = self._log_failed
        self.logs[(topic, partition)] = log
        self._logs_per_dir[os.path.dirname(log.path)] += 1
        return log

    # ------------------------------------------------------------------ failed log dirs

    def _log_failed(self, log: PartitionLog, err: KafkaStorageError) -> None:
        self.mark_offline(os.path.dirname(log.path), str(err))

    def mark_offline(self, log_dir: str, reason: str) -> None:
        """Take a log dir offline: every log in it answers KAFKA_STORAGE_ERROR from now on.

        Logged once at ERROR.  The logs stay in the map (so their
        partitions answer an error rather than "unknown") but are never
        written again by this process.
        """
        log_dir = os.path.abspath(log_dir)
        if log_dir in self.offline_dirs:
            return
        self.offline_dirs[log_dir] = reason
        n = 0
        for _tp, log in self:
            if os.path.dirname(log.path) == log_dir:
                log.offline = True
                n += 1
        logger.error(
            "log dir %s is offline (%s); its %d partition log(s) answer KAFKA_STORAGE_ERROR until a restart "
            "recovers them, the other log dirs keep serving",
            log_dir, reason, n,
        )

    def is_offline(self, log_dir: str) -> bool:
        return os.path.abspath(log_dir) in self.offline_dirs

    def delete(self, topic: str, partition: int) -> bool:
        """Remove a partition's log: rename the dir to ``*-delete`` now, remove it later."""
        log = self.logs.pop((topic, partition), None)
        if log is None:
            return False
        self._logs_per_dir[os.path.dirname(log.path)] -= 1
        log.close_without_flush()
        target = f"{log.path}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}"
        try:
            os.replace(log.path, target)
        except FileNotFoundError:
            return True
        except OSError as e:
            # the log is already out of the broker's view; the directory is
            # loaded again at the next start and deleted then, as the
            # partition is no longer placed here
            logger.error("cannot rename %s for deletion: %s", log.path, e)
            return True
        crash_point("topic.delete")  # renamed to -delete, not yet removed
        self._pending_dir_deletions.append(target)
        return True

    def purge_deleted(self) -> int:
        """Remove renamed ``*-delete`` dirs and deferred segment files (blocking; thread-safe)."""
        dirs, self._pending_dir_deletions = self._pending_dir_deletions, []
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        n = len(dirs)
        return n

    def update_config(self, topic: str, config: LogConfig) -> None:
        """New topic config for every partition of ``topic`` (and future ones)."""
        self._topic_configs[topic] = config
        for (t, _p), log in list(self.logs.items()):
            if t == topic:
                log.update_config(config)

    def log_dir_of(self, topic: str, partition: int) -> str | None:
        """The log dir (one of ``log_dirs``) holding a partition, for DescribeLogDirs."""
        log = self.logs.get((topic, partition))
        return os.path.dirname(log.path) if log is not None else None

    def topic_partitions(self, topic: str) -> list[int]:
        return sorted(p for (t, p) in self.logs if t == topic)

    # ------------------------------------------------------------------ shutdown

    def flush_all(self) -> None:
        for _tp, log in self:
            if not log.offline:
                log.flush()

    def close(self) -> None:
        """Flush and close every log, then write the clean-shutdown marker per dir."""
        if self.closed:
            return
        for _tp, log in self:
            try:
                log.close()
            except (OSError, KafkaStorageError) as e:
                if not isinstance(e, KafkaStorageError):
                    self.mark_offline(os.path.dirname(log.path), f"closing {log.path} failed: {e}")
                log.close_without_flush()
        for d in self.log_dirs:
            if d in self.offline_dirs:
                continue  # no marker: the next start must recover this dir
            path = os.path.join(d, CLEAN_SHUTDOWN_FILE)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                logger.error("cannot write the clean-shutdown marker in %s: %s", d, e)
                continue
            _fsync_dir(d)
        self.closed = True

    # ------------------------------------------------------------------ one pass of each job

    def _hw(self, tp: tuple[str, int]) -> int | None:
        return self.high_watermark(*tp) if self.high_watermark is not None else None

    def _usable(self, log: PartitionLog) -> bool:
        return not log.closed and not log.offline

    def _log_error(self, what: str, tp: tuple[str, int], log: PartitionLog, exc: BaseException) -> None:
        """One log's failure inside a pass: take its dir offline or log the bug; never raise."""
        if isinstance(exc, KafkaStorageError):
            return  # the log already reported it (its dir is offline)
        if isinstance(exc, OSError):
            self.mark_offline(os.path.dirname(log.path), f"{what} of {tp[0]}-{tp[1]} failed: {exc}")
            return
        logger.error("%s of %s-%d failed", what, tp[0], tp[1], exc_info=exc)

    async def retention_pass(self, now_ms: int | None = None) -> int:
        """Apply retention to every log; delete files in a worker thread.

        The decisions and renames are cheap but add up over thousands of
        logs, so the pass yields every :data:`SLICE_SECONDS`; a log deleted
        or taken offline meanwhile is skipped.
        """
        now = _now_ms() if now_ms is None else now_ms
        deleted = 0
        logs_with_files = []
        slice_end = time.monotonic() + SLICE_SECONDS
        for tp, log in self:
            if time.monotonic() >= slice_end:
                await trio.sleep(0)
                slice_end = time.monotonic() + SLICE_SECONDS
            if not self._usable(log):
                continue
            try:
                deleted += log.apply_retention(now, high_watermark=self._hw(tp), defer_file_deletion=True)
                log.producer_state.expire(now, self.producer_id_expiration_ms)
            except Exception as e:
                self._log_error("retention", tp, log, e)
            if log.pending_file_deletions:
                logs_with_files.append(log)

        def purge() -> None:
            for log in logs_with_files:
                log.purge_deleted_files()
            self.purge_deleted()

        await trio.to_thread.run_sync(purge)
        return deleted

    async def cleaner_pass(self, now_ms: int | None = None) -> int:
        """Compact every log whose dirty ratio (or due tombstones) asks for it."""
        now = _now_ms() if now_ms is None else now_ms
        cleaned = 0
        for tp, log in self:
            if not self._usable(log) or not log.config.compact or tp in self.uncleanable:
                continue
            job = None
            try:
                if not log.compaction_needed(now):
                    continue
                job = log.prepare_compaction(now, upper_offset=self._hw(tp))
                if job is None:
                    continue
                await trio.to_thread.run_sync(job.run)
                if not self._usable(log):
                    job.discard()
                    continue
                stats = log.finish_compaction(job)
                if not stats.aborted:
                    cleaned += 1
            except Exception as e:
                if job is not None:
                    job.discard()
                if isinstance(e, OSError) and job is not None and job.is_stale(log):
                    # retention or a truncation removed segments the job was
                    # reading: not a disk failure, the next pass starts afresh
                    logger.debug("compaction of %s-%d raced with a deletion: %s", tp[0], tp[1], e)
                    continue
                if not isinstance(e, OSError):
                    self.uncleanable.add(tp)
                self._log_error("compaction", tp, log, e)
        return cleaned

    async def flush_pass(self, now_ms: int | None = None) -> int:
        """fsync logs whose ``flush.messages`` / ``flush.ms`` is due."""
        now = _now_ms() if now_ms is None else now_ms
        flushed = 0
        for tp, log in self:
            if not self._usable(log) or not log.needs_flush(now):
                continue
            try:
                job = log.prepare_flush()
                await trio.to_thread.run_sync(job.run)
            except Exception as e:
                self._log_error("flush", tp, log, e)
                continue
            if not log.closed:
                log.complete_flush(job, now)
            flushed += 1
        return flushed

    async def _run_every(self, what: str, one_pass, interval_ms: int) -> None:
        """Run ``one_pass`` forever, ``interval_ms`` apart; a failed pass is logged, never fatal."""
        while True:
            try:
                await one_pass()
            except* Exception as group:
                # Passes catch per-log failures themselves; this is the last
                # line for a bug in the pass itself.  ``except*`` so a group
                # that also carries Cancelled still lets the cancellation out.
                for exc in group.exceptions:
                    logger.error("%s pass failed; next one in %d ms", what, interval_ms, exc_info=exc)
            await trio.sleep(interval_ms / 1000)

    # ------------------------------------------------------------------ background loops

    async def run_retention(self, interval_ms: int = 300000) -> None:
        """``log.retention.check.interval.ms`` loop (default 5 minutes)."""
        await self._run_every("retention", self.retention_pass, interval_ms)

    async def run_cleaner(self, interval_ms: int = 15000) -> None:
        """Log cleaner loop (``log.cleaner.backoff.ms`` default 15 s)."""
        await self._run_every("log cleaner", self.cleaner_pass, interval_ms)

    async def run_flusher(self, interval_ms: int = 1000) -> None:
        """Check ``flush.ms``/``flush.messages`` every ``interval_ms`` and fsync what is due."""
        await self._run_every("log flusher", self.flush_pass, interval_ms)
