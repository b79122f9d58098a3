"""kbroker.cli: exit codes and messages, run as a real subprocess where it matters."""

import subprocess
import sys
import types

import pytest

from kbroker import cli


def run_kbroker(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "kbroker", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_unknown_key_exits_2():
    r = run_kbroker("--override", "bogus.key=1")
    assert r.returncode == 2
    assert "kbroker: unknown config 'bogus.key'" in r.stderr


@pytest.mark.parametrize("override, fragment", [
    ("num.partitions=0", "num.partitions"),
    ("listeners=nonsense", "listeners"),
    ("zookeeper.connect=localhost:2181", "ZooKeeper"),
])
def test_invalid_value_exits_2(override, fragment):
    r = run_kbroker("--override", override)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("kbroker: ") and fragment in line


def test_bad_override_syntax_exits_2():
    r = run_kbroker("--override", "num.partitions")
    assert r.returncode == 2 and "key=value" in r.stderr


def test_bad_flag_exits_2():
    r = run_kbroker("--no-such-flag")
    assert r.returncode == 2 and "kbroker:" in r.stderr


def test_properties_file_positional_and_flag(tmp_path):
    p = tmp_path / "server.properties"
    p.write_text("num.partitions=4\nlog.dirs=/srv/data\n")
    for args in ([str(p)], ["-c", str(p)], ["--config", str(p)]):
        r = run_kbroker(*args, "--override", "num.partitions=6", "--print-config")
        assert r.returncode == 0, r.stderr
        assert "num.partitions=6  # STATIC_BROKER_CONFIG" in r.stdout
        assert "log.dirs=/srv/data  # STATIC_BROKER_CONFIG" in r.stdout
        assert "delete.topic.enable=true  # DEFAULT_CONFIG" in r.stdout


def test_bad_properties_file_exits_2(tmp_path):
    p = tmp_path / "server.properties"
    p.write_text("num.partitions=3\nlog.retention.hours=many\n")
    r = run_kbroker(str(p))
    assert r.returncode == 2 and "log.retention.hours" in r.stderr
    r = run_kbroker(str(tmp_path / "missing.properties"))
    assert r.returncode == 2 and "cannot read config file" in r.stderr


def test_two_different_files_exit_2(tmp_path):
    r = run_kbroker("-c", "a.properties", "b.properties")
    assert r.returncode == 2


def test_ignored_keys_logged(tmp_path):
    r = run_kbroker("--override", "num.io.threads=4", "--print-config")
    assert r.returncode == 0
    assert "INFO kbroker.config: config num.io.threads=4 is accepted for compatibility" in r.stderr


def test_main_calls_server_run(monkeypatch):
    seen = []
    fake = types.ModuleType("kbroker.server")
    fake.run = lambda config: seen.append(config)
    monkeypatch.setitem(sys.modules, "kbroker.server", fake)
    assert cli.main(["--override", "node.id=5", "--override", "log.dirs=/tmp/x"]) == 0
    assert seen and seen[0]["node.id"] == 5


def test_main_reports_missing_server(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kbroker.server", None)  # makes the import fail
    assert cli.main([]) == 1
    assert "kbroker.server" in capsys.readouterr().err


def test_main_config_error_from_server(monkeypatch, capsys):
    from kbroker.config import ConfigError

    def run(config):
        raise ConfigError("cluster.id: does not match meta.properties")

    fake = types.ModuleType("kbroker.server")
    fake.run = run
    monkeypatch.setitem(sys.modules, "kbroker.server", fake)
    assert cli.main([]) == 2
    assert "kbroker: cluster.id" in capsys.readouterr().err
