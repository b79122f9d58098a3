"""KIP-595 Raft for the KRaft metadata quorum, as a pure state machine (see :mod:`kbroker.raft.node`).

No sockets, no clock, no trio here: a shell feeds messages and time in and
carries messages, timers and log writes out.  ``tests/raft`` drives several
nodes over a simulated network from a seed.

What a shell around :class:`RaftNode` has to do
-----------------------------------------------
* Build it with the ``__cluster_metadata`` log (a :class:`RaftLog` over
  segment files and ``<offset>-<epoch>.checkpoint`` snapshots), a
  :class:`FileQuorumStateStore` on ``<metadata dir>/__cluster_metadata-0/quorum-state``,
  ``random.Random()``, the voter ids from ``controller.quorum.voters`` and a
  :class:`RaftConfig` from the ``controller.quorum.*`` settings.
* One loop: wait until ``next_deadline()`` (wall-clock ms) or a message
  arrives; call ``tick``/``handle``; then send every ``take_messages()``
  pair and act on every ``take_events()`` entry.  All calls from one task.
* Translate the dataclasses in :mod:`kbroker.raft.messages` to and from the
  generated Vote/BeginQuorumEpoch/EndQuorumEpoch/Fetch/FetchSnapshot
  messages (one topic ``__cluster_metadata``, partition 0; field names
  match), with ``correlation_id`` as the header's.  A request's answer goes
  back on the connection it came in on; a lost connection is simply a lost
  message (the state machine retries on its own timers).
* ``propose`` on the leader, wait for ``HighWatermarkChanged`` past the
  returned offset, then apply ``log.entries`` below the high watermark to the
  metadata image; on ``SnapshotLoaded`` reload the image from the snapshot.
* ``snapshot(offset, blob)`` when the image has moved on by
  ``metadata.log.max.record.bytes.between.snapshots``; ``resign(now)`` on
  shutdown before closing the sockets; ``replica_states()`` for DescribeQuorum.
"""

from .log import LEADER_CHANGE, Entry, MemoryRaftLog, RaftLog, Snapshot, SnapshotId
from .messages import (
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    EpochEndOffset,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    LeaderIdAndEpoch,
    Message,
    VoteRequest,
    VoteResponse,
)
from .node import NotLeaderError, RaftNode
from .state import HighWatermarkChanged, RaftConfig, ReplicaState, RoleChanged, SnapshotLoaded
from .store import ElectionState, FileQuorumStateStore, MemoryQuorumStateStore, QuorumStateStore

__all__ = [
    "LEADER_CHANGE",
    "BeginQuorumEpochRequest",
    "BeginQuorumEpochResponse",
    "ElectionState",
    "EndQuorumEpochRequest",
    "EndQuorumEpochResponse",
    "Entry",
    "EpochEndOffset",
    "FetchRequest",
    "FetchResponse",
    "FetchSnapshotRequest",
    "FetchSnapshotResponse",
    "FileQuorumStateStore",
    "HighWatermarkChanged",
    "LeaderIdAndEpoch",
    "MemoryQuorumStateStore",
    "MemoryRaftLog",
    "Message",
    "NotLeaderError",
    "QuorumStateStore",
    "RaftConfig",
    "RaftLog",
    "RaftNode",
    "ReplicaState",
    "RoleChanged",
    "Snapshot",
    "SnapshotId",
    "SnapshotLoaded",
    "VoteRequest",
    "VoteResponse",
]
