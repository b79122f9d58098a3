"""Metadata changes under I/O failure: never half-applied, never diverging after a restart.

A real broker runs in-process (``kbroker.server.serve``); failures are
injected deterministically by replacing one method of the metadata log or of
the partition-log machinery with one that raises the OSError a full disk or
descriptor exhaustion would.  Every test then restarts the broker on the same
data and checks that the image replayed from ``__cluster_metadata`` is exactly
what the clients were told.
"""

from __future__ import annotations

import errno
import os

import pytest
import trio

from kbroker import metadata_log
from kbroker.log import manager as log_manager
from kbroker.log.errors import KafkaStorageError
from kbroker.metadata.errors import MetadataLogFatal
from protocol import ApiKey, ErrorCode
from protocol.records import encode_batch
from test_server import Client, create_topic, make_config, produce_body, start


def create_body(*names, partitions=1):
    return {
        "topics": [{"name": n, "num_partitions": partitions, "replication_factor": 1, "configs": []} for n in names],
        "timeout_ms": 1000,
    }


class _FailingJob:
    """A flush job whose fsync fails (what EIO/ENOSPC at fsync time looks like)."""

    target_offset = 0

    def run(self):
        raise OSError(errno.EIO, "Input/output error (injected)")


def fail_next_metadata_fsync(broker):
    plog = broker.metadata.plog
    real = plog.prepare_flush

    def prepare_flush():
        plog.prepare_flush = real  # once
        real().close()  # release the descriptors the real job took
        return _FailingJob()

    plog.prepare_flush = prepare_flush


def leaves(exc):
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from leaves(e)
    else:
        yield exc


async def topics_after_restart(config) -> dict[str, int]:
    """{topic: partition count} as a restarted broker replays it (internal topics left out)."""
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        r = await c.call(ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})
        n.cancel_scope.cancel()
    return {t.name: len(t.partitions) for t in r.topics if not t.name.startswith("__")}


async def test_failed_metadata_fsync_is_not_applied_and_does_not_come_back(tmp_path):
    config = make_config(tmp_path)
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        await create_topic(c, "before")
        end = broker.metadata.end_offset
        fail_next_metadata_fsync(broker)
        r = await c.call(ApiKey.CREATE_TOPICS, 7, create_body("lost", partitions=2))
        assert r.topics[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
        assert "lost" not in broker.image.topics
        assert broker.metadata.end_offset == end  # the written batch was cut off again
        assert ("lost", 0) not in broker.partitions
        # The log was rolled back, not abandoned: the next change goes through.
        await create_topic(c, "after")
        n.cancel_scope.cancel()
    assert await topics_after_restart(config) == {"before": 1, "after": 1}


async def test_failed_metadata_append_answers_storage_error_for_every_admin_api(tmp_path):
    config = make_config(tmp_path)
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        await create_topic(c, "t")
        plog = broker.metadata.plog
        real_append = plog.append

        def failing_append(*a, **kw):
            raise KafkaStorageError("append failed: [Errno 28] No space left on device (injected)")

        plog.append = failing_append
        r = await c.call(ApiKey.CREATE_PARTITIONS, 3, {"topics": [{"name": "t", "count": 3, "assignments": None}],
                                                       "timeout_ms": 1000, "validate_only": False})
        assert r.results[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
        r = await c.call(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{
            "resource_type": 2, "resource_name": "t",
            "configs": [{"name": "retention.ms", "config_operation": 0, "value": "1000"}]}], "validate_only": False})
        assert r.responses[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
        r = await c.call(ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "t"}], "timeout_ms": 1000})
        assert r.responses[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
        r = await c.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 1000,
                                                      "producer_id": -1, "producer_epoch": -1})
        assert r.error_code == ErrorCode.KAFKA_STORAGE_ERROR and r.producer_id == -1
        r = await c.call(ApiKey.METADATA, 12, {"topics": [{"name": "auto"}], "allow_auto_topic_creation": True})
        assert r.topics[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
        # Nothing of it reached the image.
        assert len(broker.image.topics["t"].partitions) == 1 and "auto" not in broker.image.topics
        assert broker.image.topic_configs("t") == {}
        plog.append = real_append
        r = await c.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 1000,
                                                      "producer_id": -1, "producer_epoch": -1})
        assert r.error_code == 0 and r.producer_id >= 0
        n.cancel_scope.cancel()
    assert await topics_after_restart(config) == {"t": 1}


async def test_unrecoverable_metadata_log_stops_the_broker(tmp_path, monkeypatch):
    config = make_config(tmp_path)

    async def rollback_fails(self, offset):
        raise OSError(errno.EIO, "Input/output error (injected)")

    answered = []
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as n:
            broker = await start(n, config)
            c = await Client.connect(broker.port)
            await create_topic(c, "kept")
            fail_next_metadata_fsync(broker)
            monkeypatch.setattr(metadata_log.MetadataLog, "rollback", rollback_fails)
            await c.send(ApiKey.CREATE_TOPICS, 7, create_body("unknown-outcome"))
            answered.append(await c.receive_frame())
            await trio.sleep_forever()  # the broker's failure ends this nursery
    fatal = [e for e in leaves(caught.value) if isinstance(e, MetadataLogFatal)]
    assert len(fatal) == 1 and "could not be rolled back" in str(fatal[0])
    # No answer: the client cannot have been told "created".
    assert answered == [None]
    assert "unknown-outcome" not in broker.image.topics
    # No clean-shutdown marker where the metadata log lives: the next start recovers it.
    assert not os.path.exists(os.path.join(broker.log_dirs[0], log_manager.CLEAN_SHUTDOWN_FILE))
    monkeypatch.undo()
    # The next start works; the unanswered topic may or may not be there (its
    # records may have reached the disk), the acknowledged one is.
    after = await topics_after_restart(config)
    assert after.get("kept") == 1 and set(after) <= {"kept", "unknown-outcome"}


async def test_partition_log_that_cannot_be_created_answers_storage_error_then_recovers(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    real_open = log_manager.PartitionLog.open

    def emfile(path, *a, **kw):
        if os.path.basename(path).startswith("nofd-"):
            raise OSError(errno.EMFILE, "Too many open files (injected)")
        return real_open(path, *a, **kw)

    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        await create_topic(c, "fine")
        monkeypatch.setattr(log_manager.PartitionLog, "open", staticmethod(emfile))
        # The metadata change is committed, so the creation is acknowledged...
        await create_topic(c, "nofd", 2)
        assert len(broker.image.topics["nofd"].partitions) == 2
        # ...and the partitions this node could not open answer KAFKA_STORAGE_ERROR, not NOT_LEADER.
        r = await c.call(ApiKey.PRODUCE, 11, produce_body("nofd", encode_batch([(b"k", b"v")])))
        assert r.responses[0].partition_responses[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
        assert set(broker.storage_errors) == {("nofd", 0), ("nofd", 1)}
        n.cancel_scope.cancel()
    monkeypatch.undo()
    # The next start creates the missing logs from the committed image.
    async with trio.open_nursery() as n:
        broker = await start(n, config)
        c = await Client.connect(broker.port)
        for p in (0, 1):
            r = await c.call(ApiKey.PRODUCE, 11, produce_body("nofd", encode_batch([(b"k", b"v")]), partition=p))
            assert r.responses[0].partition_responses[0].error_code == 0
        assert broker.storage_errors == {}
        n.cancel_scope.cancel()
    assert await topics_after_restart(config) == {"fine": 1, "nofd": 2}


async def test_failed_partition_log_is_retried_at_the_next_sync(tmp_path):
    async with trio.open_nursery() as n:
        broker = await start(n, make_config(tmp_path))
        c = await Client.connect(broker.port)
        real_create = broker.logs.create

        def create(topic, partition, *a, **kw):
            if topic == "later":
                raise KafkaStorageError("create failed (injected)")
            return real_create(topic, partition, *a, **kw)

        broker.logs.create = create
        await create_topic(c, "later")
        assert ("later", 0) in broker.storage_errors
        broker.logs.create = real_create
        await create_topic(c, "other")  # any metadata change syncs the partitions again
        assert broker.storage_errors == {}
        r = await c.call(ApiKey.PRODUCE, 11, produce_body("later", encode_batch([(b"k", b"v")])))
        assert r.responses[0].partition_responses[0].error_code == 0
        n.cancel_scope.cancel()
