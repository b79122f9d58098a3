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
  trio thread.

Directory names: the partition number follows the *last* ``-``, so topics with
``-``, ``.`` and ``_`` in their names parse correctly.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from typing import Callable, Iterator

import trio

from .config import LogConfig
from .errors import KafkaStorageError
from .partition_log import PartitionLog, _fsync_dir, log_dir_name, parse_log_dir_name

CLEAN_SHUTDOWN_FILE = ".kbroker_clean_shutdown"
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
        self.had_clean_shutdown: dict[str, bool] = {}
        self._pending_dir_deletions: list[str] = []
        # (topic, partition) -> high watermark; bounds retention and compaction
        self.high_watermark: Callable[[str, int], int | None] | None = None
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
                self.logs[parsed] = PartitionLog.open(full, cfg, recover=not clean, now_ms=now)
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
        if log_dir is None:
            counts = {d: 0 for d in self.log_dirs}
            for log in self.logs.values():
                parent = os.path.dirname(log.path)
                if parent in counts:
                    counts[parent] += 1
            log_dir = min(self.log_dirs, key=lambda d: (counts[d], self.log_dirs.index(d)))
        path = os.path.join(log_dir, log_dir_name(topic, partition))
        log = PartitionLog.open(path, cfg, recover=False, now_ms=now_ms)
        self.logs[(topic, partition)] = log
        return log

    def delete(self, topic: str, partition: int) -> bool:
        """Remove a partition's log: rename the dir to ``*-delete`` now, remove it later."""
        log = self.logs.pop((topic, partition), None)
        if log is None:
            return False
        log.close_without_flush()
        target = f"{log.path}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}"
        try:
            os.replace(log.path, target)
        except FileNotFoundError:
            return True
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
            log.flush()

    def close(self) -> None:
        """Flush and close every log, then write the clean-shutdown marker per dir."""
        if self.closed:
            return
        for _tp, log in self:
            log.close()
        for d in self.log_dirs:
            path = os.path.join(d, CLEAN_SHUTDOWN_FILE)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(d)
        self.closed = True

    # ------------------------------------------------------------------ one pass of each job

    def _hw(self, tp: tuple[str, int]) -> int | None:
        return self.high_watermark(*tp) if self.high_watermark is not None else None

    async def retention_pass(self, now_ms: int | None = None) -> int:
        """Apply retention to every log; delete files in a worker thread."""
        now = _now_ms() if now_ms is None else now_ms
        deleted = 0
        logs_with_files = []
        for tp, log in self:
            if log.closed:
                continue
            try:
                deleted += log.apply_retention(now, high_watermark=self._hw(tp), defer_file_deletion=True)
                log.producer_state.expire(now, self.producer_id_expiration_ms)
            except OSError as e:  # pragma: no cover - disk failure
                logger.error("retention failed for %s: %s", log.path, e)
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
            if log.closed or not log.config.compact or not log.compaction_needed(now):
                continue
            job = log.prepare_compaction(now, upper_offset=self._hw(tp))
            if job is None:
                continue
            try:
                await trio.to_thread.run_sync(job.run)
            except Exception as e:
                job.discard()
                logger.error("compaction of %s failed: %s", log.path, e)
                continue
            stats = log.finish_compaction(job)
            if not stats.aborted:
                cleaned += 1
        return cleaned

    async def flush_pass(self, now_ms: int | None = None) -> int:
        """fsync logs whose ``flush.messages`` / ``flush.ms`` is due."""
        now = _now_ms() if now_ms is None else now_ms
        flushed = 0
        for _tp, log in self:
            if log.closed or not log.needs_flush(now):
                continue
            job = log.prepare_flush()
            await trio.to_thread.run_sync(job.run)
            if not log.closed:
                log.complete_flush(job, now)
            flushed += 1
        return flushed

    # ------------------------------------------------------------------ background loops

    async def run_retention(self, interval_ms: int = 300000) -> None:
        """``log.retention.check.interval.ms`` loop (default 5 minutes)."""
        while True:
            await self.retention_pass()
            await trio.sleep(interval_ms / 1000)

    async def run_cleaner(self, interval_ms: int = 15000) -> None:
        """Log cleaner loop (``log.cleaner.backoff.ms`` default 15 s)."""
        while True:
            await self.cleaner_pass()
            await trio.sleep(interval_ms / 1000)

    async def run_flusher(self, interval_ms: int = 1000) -> None:
        """Check ``flush.ms``/``flush.messages`` every ``interval_ms``
        (``log.flush.scheduler.interval.ms``) and fsync what is due."""
        while True:
            await self.flush_pass()
            await trio.sleep(interval_ms / 1000)
