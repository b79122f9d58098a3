"""Seeded simulations of the Raft quorum (see tests/raft/simulate.py for what is checked).

Every scenario runs RAFT_SEEDS seeds (default 300) starting at RAFT_SEED_BASE
(default 0); a failure lists each failing seed with the command that replays it.
"""

from __future__ import annotations

import os

import pytest

from .simulate import SCENARIOS, replay_command, run

SEEDS = int(os.environ.get("RAFT_SEEDS", "300"))
BASE = int(os.environ.get("RAFT_SEED_BASE", "0"))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario(scenario: str) -> None:
    failures = []
    for seed in range(BASE, BASE + SEEDS):
        try:
            run(scenario, seed)
        except AssertionError as e:
            failures.append(f"seed {seed}: {str(e).splitlines()[0]}\n    replay: {replay_command(scenario, seed)}")
    assert not failures, f"{len(failures)} of {SEEDS} seeds failed:\n" + "\n".join(failures[:10])
