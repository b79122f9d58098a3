"""The trio shell around RaftNode: timers, proposals, events, and a failing disk as a fatal stop."""

from __future__ import annotations

import pytest
import trio

from kbroker.raft import HighWatermarkChanged, MemoryQuorumStateStore, MemoryRaftLog, RaftConfig, RoleChanged
from kbroker.raft.shell import RaftShell, RaftStorageFailed

FAST = RaftConfig(election_timeout_ms=50, fetch_timeout_ms=100, election_backoff_max_ms=50, request_timeout_ms=100)


def single(log=None, events=None) -> RaftShell:
    return RaftShell(1, {1: ("127.0.0.1", 1)}, log or MemoryRaftLog(), MemoryQuorumStateStore(), config=FAST,
                     cluster_id="c", on_event=(events.append if events is not None else lambda e: None))


async def wait_until(predicate, shell: RaftShell, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await shell.changed.wait()


async def test_a_single_voter_elects_itself_on_its_timer_and_commits_what_it_proposes(nursery):
    events: list = []
    shell = single(events=events)
    await nursery.start(shell.run)
    await wait_until(lambda: shell.node.role == "leader", shell)
    last = shell.propose([b"a", b"b"])
    await wait_until(lambda: shell.node.high_watermark > last, shell)
    assert [e.payload for e in shell.node.log.entries(0, 10)][1:] == [b"a", b"b"]  # after the epoch marker
    assert any(isinstance(e, RoleChanged) and e.role == "leader" for e in events)
    assert any(isinstance(e, HighWatermarkChanged) and e.high_watermark > last for e in events)


async def test_an_idle_shell_sleeps_until_its_next_deadline():
    """The timer task must not spin: an idle leader of one wakes only for its own deadlines."""
    shell = single()
    ticks = 0
    real_tick = shell.node.tick

    def counting_tick(now):
        nonlocal ticks
        ticks += 1
        real_tick(now)

    shell.node.tick = counting_tick
    async with trio.open_nursery() as nursery:
        await nursery.start(shell.run)
        await wait_until(lambda: shell.node.role == "leader", shell)
        before = ticks
        # Checkpoints, not time: a spinning timer would tick on every one of them.
        for _ in range(200):
            await trio.sleep(0)
        assert ticks - before < 20, f"the timer ticked {ticks - before} times while idle"
        nursery.cancel_scope.cancel()


class FailingLog(MemoryRaftLog):
    fail = False

    def append(self, entries):
        if self.fail:
            raise OSError(28, "No space left on device")
        super().append(entries)


async def test_a_disk_failure_under_a_proposal_stops_the_shell_not_just_the_caller():
    log = FailingLog()
    shell = single(log=log)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(shell.run)
            await wait_until(lambda: shell.node.role == "leader", shell)
            log.fail = True
            with pytest.raises(RaftStorageFailed, match="No space left"):
                shell.propose([b"x"])
            await trio.sleep_forever()  # the shell's own nursery must end this
    assert caught.value.subgroup(RaftStorageFailed) is not None
