"""A fake clock and bookkeeping around the pure group state machine, for tests."""

from __future__ import annotations

import itertools
import struct

from kbroker.group.state import (
    CommitPartition,
    CommitRequest,
    GroupConfig,
    GroupCoordinatorState,
    HeartbeatRequest,
    JoinRequest,
    LeaveMember,
    LeaveRequest,
    SyncRequest,
)


def subscription(*topics: str, version: int = 0, user_data: bytes | None = None) -> bytes:
    """A ConsumerProtocolSubscription (the classic consumer's JoinGroup metadata)."""
    out = struct.pack(">hi", version, len(topics))
    for t in topics:
        raw = t.encode()
        out += struct.pack(">h", len(raw)) + raw
    if user_data is None:
        out += struct.pack(">i", -1)
    else:
        out += struct.pack(">i", len(user_data)) + user_data
    return out


class Waiter:
    """A parked request: its response arrives through a completion."""

    _ids = itertools.count(1)

    def __init__(self, label: str = ""):
        self.label = label or f"w{next(self._ids)}"
        self.response = None

    def __repr__(self):
        return f"Waiter({self.label}, {self.response})"


class Harness:
    def __init__(self, **config):
        defaults = dict(initial_rebalance_delay_ms=0, min_session_timeout_ms=1000)
        defaults.update(config)
        counter = itertools.count(1)
        self.sm = GroupCoordinatorState(GroupConfig(**defaults), new_uuid=lambda: f"uuid{next(counter)}")
        self.now = 1_000_000
        self.records = []
        self.sm.start(self.now)

    # -- driving --------------------------------------------------------------------
    def _take(self, res):
        # Nothing is written here, so every write "succeeds": deferred effects apply at once.
        res.apply()
        self.records.extend(res.records)
        for waiter, response in res.completions:
            waiter.response = response
        return res

    def advance(self, ms: int = 0):
        """Move the clock, firing timers at their own deadlines on the way."""
        target = self.now + ms
        while True:
            d = self.sm.next_deadline()
            if d is None or d > target:
                break
            self.now = max(self.now, d)
            self._take(self.sm.tick(self.now))
        self.now = target

    def join(self, group="g", member_id="", *, protocols=None, instance=None, session=10_000, rebalance=30_000,
             version=9, client="client", protocol_type="consumer", waiter=None):
        if protocols is None:
            protocols = [("range", subscription("t"))]
        req = JoinRequest(
            group_id=group, member_id=member_id, group_instance_id=instance, protocol_type=protocol_type,
            protocols=protocols, session_timeout_ms=session, rebalance_timeout_ms=rebalance, client_id=client,
            client_host="/127.0.0.1", version=version,
        )
        w = waiter or Waiter(member_id or client)
        res = self._take(self.sm.join(req, self.now, w))
        if res.response is not None:
            w.response = res.response
        return w

    def join_new(self, group="g", **kw):
        """KIP-394 dance: join, get MEMBER_ID_REQUIRED, join again with the id (parked or answered)."""
        first = self.join(group, **kw)
        assert first.response["error_code"] == 79, first.response
        return self.join(group, first.response["member_id"], **kw)

    def sync(self, group, generation, member_id, assignments=None, instance=None, waiter=None, **kw):
        w = waiter or Waiter(f"sync-{member_id}")
        req = SyncRequest(group, generation, member_id, instance, assignments=assignments or {}, **kw)
        res = self._take(self.sm.sync(req, self.now, w))
        if res.response is not None:
            w.response = res.response
        return w

    def heartbeat(self, group, generation, member_id, instance=None):
        res = self._take(self.sm.heartbeat(HeartbeatRequest(group, generation, member_id, instance), self.now))
        return res.response["error_code"]

    def leave(self, group, *members):
        idents = [m if isinstance(m, LeaveMember) else LeaveMember(m) for m in members]
        return self._take(self.sm.leave(LeaveRequest(group, idents), self.now)).response

    def commit(self, group, offsets, *, generation=-1, member_id="", instance=None, version=9, retention=-1):
        topics = {}
        for (topic, partition), value in offsets.items():
            offset, meta = value if isinstance(value, tuple) else (value, "")
            topics.setdefault(topic, []).append(CommitPartition(partition, offset, -1, meta))
        req = CommitRequest(group, topics, generation, member_id, instance, retention, version)
        return self._take(self.sm.commit_offsets(req, self.now)).response

    def group(self, gid="g"):
        return self.sm.groups.get(gid)
