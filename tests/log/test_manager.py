import os

import pytest
import trio

from protocol.records import encode_batch

from kbroker.log import KafkaStorageError
from kbroker.log.manager import CLEAN_SHUTDOWN_FILE, LogManager

from ._util import batch, read_all_records, small_config


def test_create_get_and_layout(tmp_path):
    dirs = [str(tmp_path / "d1"), str(tmp_path / "d2")]
    m = LogManager(dirs, small_config())
    a = m.create("my.topic-with_dash", 0)
    b = m.create("my.topic-with_dash", 1)
    c = m.create("other", 10)
    assert m.get("my.topic-with_dash", 0) is a
    assert m.get("nope", 0) is None
    assert m.create("other", 10) is c
    # spread across dirs
    assert {os.path.dirname(x.path) for x in (a, b, c)} == set(dirs)
    assert os.path.basename(a.path) == "my.topic-with_dash-0"
    assert (a.topic, a.partition) == ("my.topic-with_dash", 0)
    a.append(batch(2), now_ms=0)
    m.close()
    for d in dirs:
        assert os.path.exists(os.path.join(d, CLEAN_SHUTDOWN_FILE))

    m = LogManager(dirs, small_config())
    assert all(m.had_clean_shutdown.values())
    assert sorted(tp for tp, _ in m) == [("my.topic-with_dash", 0), ("my.topic-with_dash", 1), ("other", 10)]
    assert m.get("my.topic-with_dash", 0).log_end_offset == 2
    assert m.topic_partitions("my.topic-with_dash") == [0, 1]
    # the marker is gone while running: a crash now is detected next time
    for d in dirs:
        assert not os.path.exists(os.path.join(d, CLEAN_SHUTDOWN_FILE))


def test_unclean_start_recovers(tmp_path):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config())
    log = m.create("t", 0)
    for _ in range(5):
        log.append(batch(1), now_ms=0)
    seg_path = log.active_segment.log_path
    size = log.active_segment.size
    log.close_without_flush()  # crash: no marker written
    os.truncate(seg_path, size - 7)
    m2 = LogManager([d], small_config())
    assert m2.had_clean_shutdown == {os.path.abspath(d): False}
    assert m2.get("t", 0).log_end_offset == 4


def test_clean_start_trusts_files(tmp_path):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config())
    m.create("t", 0).append(batch(3), now_ms=0)
    m.close()
    m2 = LogManager([d], small_config())
    assert m2.get("t", 0).log_end_offset == 3
    assert m2.get("t", 0).recovered_bytes_truncated == 0


def test_delete_renames_then_purges(tmp_path):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config())
    m.create("a-b", 3).append(batch(1), now_ms=0)
    m.create("a-b", 4)
    assert m.delete("a-b", 3)
    assert not m.delete("a-b", 3)
    assert m.get("a-b", 3) is None
    names = os.listdir(d)
    assert "a-b-3" not in names
    pending = [n for n in names if n.endswith("-delete")]
    assert len(pending) == 1 and pending[0].startswith("a-b-3.")
    # a restart before the purge ignores it and removes it later
    m.close()
    m2 = LogManager([d], small_config())
    assert sorted(tp for tp, _ in m2) == [("a-b", 4)]
    assert m2.purge_deleted() == 1
    assert not [n for n in os.listdir(d) if n.endswith("-delete")]
    # recreating the partition starts from scratch
    assert m2.create("a-b", 3).log_end_offset == 0


def test_same_partition_in_two_dirs_is_an_error(tmp_path):
    d1, d2 = str(tmp_path / "d1"), str(tmp_path / "d2")
    os.makedirs(os.path.join(d1, "t-0"))
    os.makedirs(os.path.join(d2, "t-0"))
    with pytest.raises(KafkaStorageError):
        LogManager([d1, d2], small_config())


def test_non_log_entries_ignored(tmp_path):
    d = tmp_path / "d"
    os.makedirs(d / "not_a_log")
    (d / "meta.properties").write_text("x")
    m = LogManager([str(d)], small_config())
    assert len(m) == 0


def test_update_config_and_topic_config_provider(tmp_path):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config(), topic_config=lambda t: small_config(segment_bytes=300) if t == "s" else None)
    s = m.create("s", 0)
    assert s.config.segment_bytes == 300
    t = m.create("t", 0)
    m.update_config("t", small_config(retention_ms=5))
    assert t.config.retention_ms == 5
    assert m.create("t", 1).config.retention_ms == 5


async def test_background_passes(tmp_path):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config(segment_bytes=400))
    r = m.create("ret", 0, small_config(segment_bytes=400, retention_ms=1000))
    for _ in range(10):
        r.append(batch(2, ts=0), now_ms=0)
    c = m.create("cmp", 0, small_config(segment_bytes=400, cleanup_policy=("compact",)))
    for i in range(30):
        c.append(bytearray(encode_batch([(b"k%d" % (i % 3), b"v%d" % i, (), 1000 + i)])), now_ms=0)
    c.roll(now_ms=0)
    f = m.create("fl", 0, small_config(flush_messages=1))
    f.append(batch(1), now_ms=0)

    assert await m.retention_pass(now_ms=10_000) > 0
    assert r.log_start_offset == r.log_end_offset == 20
    assert not [n for n in os.listdir(r.path) if n.endswith(".deleted")]

    assert await m.cleaner_pass(now_ms=10_000) == 1
    assert len(read_all_records(c)) == 3
    assert await m.cleaner_pass(now_ms=10_000) == 0  # nothing dirty any more

    assert await m.flush_pass(now_ms=10_000) >= 1
    assert f.recovery_point == 1

    m.delete("ret", 0)
    await m.retention_pass(now_ms=10_000)
    assert not [n for n in os.listdir(d) if n.endswith("-delete")]

    m.high_watermark = lambda t, p: 0
    assert await m.cleaner_pass(now_ms=10_000) == 0


async def test_background_loops_run_and_cancel(tmp_path):
    m = LogManager([str(tmp_path / "d")], small_config())
    log = m.create("fl", 0, small_config(flush_messages=1))
    log.append(batch(1), now_ms=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.run_retention, 10)
        nursery.start_soon(m.run_cleaner, 10)
        nursery.start_soon(m.run_flusher, 10)
        with trio.fail_after(5):
            while log.recovery_point < 1:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    m.close()


def test_log_dir_of(tmp_path):
    d = str(tmp_path / "d")
    m = LogManager([d], small_config())
    m.create("t", 0)
    assert m.log_dir_of("t", 0) == os.path.abspath(d)
    assert m.log_dir_of("t", 1) is None
