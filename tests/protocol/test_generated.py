"""The committed protocol/messages/ is exactly what scripts/gen_protocol.py makes from the specs,
and the package works without the specs being present."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SPEC = REPO.parent / "shared" / "kafka-protocol"
MESSAGES = REPO / "protocol" / "messages"
GENERATOR = REPO / "scripts" / "gen_protocol.py"


def _py_files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.py"))}


@pytest.mark.skipif(not (SPEC / "message").is_dir(), reason=f"Kafka message specs not found at {SPEC}")
def test_committed_messages_match_generator(tmp_path):
    out = tmp_path / "messages"
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--spec", str(SPEC), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = _py_files(out)
    committed = _py_files(MESSAGES)
    assert fresh, "generator wrote nothing"
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    changed = sorted(n for n in set(fresh) & set(committed) if fresh[n] != committed[n])
    assert not (missing or extra or changed), (
        "protocol/messages/ is out of date; run scripts/gen_protocol.py "
        f"(not committed: {missing}, stale: {extra}, differing: {changed})"
    )


def test_import_without_specs(tmp_path):
    """`import protocol` reads nothing from ../shared: run it from elsewhere with the specs hidden."""
    code = textwrap.dedent(
        """
        import builtins, io, os, sys
        real_open = builtins.open
        real_io_open = io.open
        def guarded(path, *a, **k):
            p = os.fspath(path) if not isinstance(path, int) else ""
            if isinstance(p, bytes):
                p = p.decode()
            if "kafka-protocol" in p or p.endswith(".json"):
                raise AssertionError("protocol read a spec file: " + p)
            return real_open(path, *a, **k)
        builtins.open = guarded
        io.open = guarded
        import protocol
        from protocol import ApiKey, decode_request, encode_request
        # Load every API module too, not just the index.
        for key in protocol.API_INDEX:
            lo, hi = protocol.supported_versions(key)
            protocol.request_schema(key).struct(hi)
            protocol.response_schema(key).struct(lo)
        frame = encode_request(ApiKey.API_VERSIONS, 3, {"client_software_name": "x",
                               "client_software_version": "1"}, correlation_id=7)
        header, body = decode_request(frame[4:])
        assert header.correlation_id == 7 and body.client_software_name == "x"
        print("ok", protocol.__file__)
        """
    )
    # A copy of the package in a folder with no ../shared beside it.
    pkg_root = tmp_path / "site"
    shutil.copytree(REPO / "protocol", pkg_root / "protocol", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(pkg_root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")
    assert str(pkg_root / "protocol") in proc.stdout
