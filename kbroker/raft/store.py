"""Where a node keeps its election state: Kafka's ``quorum-state`` file.

Raft is only safe if a voter remembers, across crashes, the latest epoch it
has seen and whom it voted for in it; otherwise a restarted voter could vote
twice in one epoch and let two leaders be elected.  The node therefore writes
the :class:`ElectionState` *before* it sends anything that depends on it (a
granted vote above all), exactly as Kafka writes ``quorum-state`` before
answering a Vote.

:class:`FileQuorumStateStore` writes the same JSON shape as Kafka
(``{"leaderId", "leaderEpoch", "votedId", "appliedOffset", "currentVoters",
"data_version"}``) via a temporary file, fsync and rename, so a crash leaves
either the old or the new state, never a torn one.
:class:`MemoryQuorumStateStore` is the simulation's: the object outlives a
simulated crash, which is the model of a durable write.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ElectionState:
    epoch: int = 0
    voted_id: int | None = None
    leader_id: int | None = None


class QuorumStateStore(Protocol):
    def read(self) -> ElectionState | None: ...

    def write(self, state: ElectionState) -> None: ...


class MemoryQuorumStateStore:
    def __init__(self) -> None:
        self.state: ElectionState | None = None
        self.writes = 0

    def read(self) -> ElectionState | None:
        return self.state

    def write(self, state: ElectionState) -> None:
        self.state = state
        self.writes += 1


class FileQuorumStateStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def read(self) -> ElectionState | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        voted = data.get("votedId", -1)
        leader = data.get("leaderId", -1)
        return ElectionState(
            epoch=int(data.get("leaderEpoch", 0)),
            voted_id=None if voted < 0 else voted,
            leader_id=None if leader < 0 else leader,
        )

    def write(self, state: ElectionState) -> None:
        data = {
            "clusterId": "",
            "leaderId": -1 if state.leader_id is None else state.leader_id,
            "leaderEpoch": state.epoch,
            "votedId": -1 if state.voted_id is None else state.voted_id,
            "appliedOffset": 0,
            "currentVoters": [],
            "data_version": 0,
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
