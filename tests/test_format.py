"""kbroker format / random-uuid: meta.properties written and checked like kafka-storage.sh."""

import os

import pytest

from kbroker import cli, metadata_log
from kbroker.config import ConfigError, is_kafka_uuid, parse_properties

CLUSTER = "MkU3OEVBNTcwNTJENDM2Qg"
OTHER_CLUSTER = "J8qXRwI-Qyi2G0guFTiuYw"


def fmt(*args):
    return cli.main(["format", *args])


def meta(d):
    return parse_properties((d / "meta.properties").read_text())


def test_random_uuid_prints_a_new_cluster_id(capsys):
    ids = set()
    for _ in range(50):
        assert cli.main(["random-uuid"]) == 0
        text = capsys.readouterr().out.strip()
        assert is_kafka_uuid(text) and not text.startswith("-")
        ids.add(text)
    assert len(ids) == 50


def test_new_uuid_avoids_kafkas_reserved_forms(monkeypatch):
    import base64
    import uuid

    # all-zeros, the metadata topic's id (1), and a leading "-" are skipped
    dash = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64 of 0xF8 starts with "-"
    seq = iter([uuid.UUID(int=0), uuid.UUID(int=1), dash, uuid.UUID(int=2**100)])
    monkeypatch.setattr(metadata_log.uuid, "uuid4", lambda: next(seq))
    assert metadata_log.new_uuid() == base64.urlsafe_b64encode(uuid.UUID(int=2**100).bytes).decode()[:22]


def test_format_writes_every_log_dir_and_the_metadata_dir(tmp_path, capsys):
    a, b, m = tmp_path / "a", tmp_path / "b", tmp_path / "meta"
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a},{b}", "--override", f"metadata.log.dir={m}",
               "--override", "node.id=3") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"Formatting data directory {a}.", f"Formatting data directory {b}.",
                   f"Formatting metadata directory {m}."]
    dir_ids = set()
    for d in (a, b, m):
        props = meta(d)
        assert props["version"] == "1"
        assert props["node.id"] == "3"
        assert props["cluster.id"] == CLUSTER
        assert is_kafka_uuid(props["directory.id"])
        dir_ids.add(props["directory.id"])
    assert len(dir_ids) == 3
    assert not list(tmp_path.glob("*/*.tmp"))


def test_format_from_a_properties_file_with_overrides(tmp_path):
    p = tmp_path / "server.properties"
    p.write_text(f"node.id=2\nlog.dirs={tmp_path}/x\n")
    assert fmt("-t", CLUSTER, "-c", str(p), "--override", "node.id=5") == 0
    assert meta(tmp_path / "x")["node.id"] == "5"


def test_the_metadata_dir_defaults_to_the_first_log_dir(tmp_path, capsys):
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={tmp_path}/a,{tmp_path}/b") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"Formatting metadata directory {tmp_path}/a.", f"Formatting data directory {tmp_path}/b."]


def test_already_formatted_is_refused_unless_ignore_formatted(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a}") == 0
    before = (a / "meta.properties").read_text()
    capsys.readouterr()
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a}") == 1
    assert capsys.readouterr().err.strip() == (
        f"kbroker: Log directory {a} is already formatted. "
        f"Use --ignore-formatted to ignore this directory and format the others.")
    # nothing else is written when one directory stops the format
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a},{b}") == 1
    assert not b.exists()
    capsys.readouterr()
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a}", "--ignore-formatted") == 0
    assert capsys.readouterr().out.strip() == "All of the log directories are already formatted."
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a},{b}", "-g") == 0
    assert capsys.readouterr().out.strip() == f"Formatting data directory {b}."
    assert (a / "meta.properties").read_text() == before  # untouched
    assert meta(b)["directory.id"] != meta(a)["directory.id"]


@pytest.mark.parametrize("flags", [(), ("--ignore-formatted",)])
def test_a_dir_of_another_cluster_or_node_is_refused_even_with_ignore_formatted(tmp_path, capsys, flags):
    a = tmp_path / "a"
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a}") == 0
    before = (a / "meta.properties").read_text()
    capsys.readouterr()
    assert fmt("-t", OTHER_CLUSTER, "--override", f"log.dirs={a}", *flags) == 1
    assert capsys.readouterr().err.strip() == (
        f"kbroker: cluster.id: {a}/meta.properties belongs to cluster {CLUSTER}, not {OTHER_CLUSTER}")
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={a}", "--override", "node.id=9", *flags) == 1
    assert capsys.readouterr().err.strip() == (
        f"kbroker: node.id: {a}/meta.properties belongs to node.id 1, but this broker is node.id 9")
    assert (a / "meta.properties").read_text() == before


def test_invalid_cluster_id_is_refused(tmp_path, capsys):
    for bad in ("my-cluster", "MkU3OEVBNTcwNTJENDM2Qg==", ""):
        assert fmt("-t", bad, "--override", f"log.dirs={tmp_path}/a") == 1
        assert "does not appear to be a valid UUID" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_cluster_id_setting_must_agree_with_t(tmp_path, capsys):
    assert fmt("-t", CLUSTER, "--override", f"cluster.id={OTHER_CLUSTER}",
               "--override", f"log.dirs={tmp_path}/a") == 1
    assert "disagree" in capsys.readouterr().err
    assert fmt("-t", CLUSTER, "--override", f"cluster.id={CLUSTER}", "--override", f"log.dirs={tmp_path}/a") == 0


def test_bad_config_or_arguments_exit_2(tmp_path, capsys):
    assert fmt("-t", CLUSTER, "--override", "num.partitions=0") == 2
    assert "kbroker: num.partitions" in capsys.readouterr().err
    for args in (["format", "--override", f"log.dirs={tmp_path}/a"],  # -t is required
                 ["format", "-t", CLUSTER, "--standalone", "--no-initial-controllers"],
                 ["format", "-t", CLUSTER, "--initial-controllers", "1@h:9093:abc"],  # not supported yet
                 ["random-uuid", "extra"]):
        with pytest.raises(SystemExit) as e:
            cli.main(args)
        assert e.value.code == 2, args
    assert not (tmp_path / "a").exists()


DYNAMIC_CONTROLLER = ("--override", "process.roles=controller", "--override", "listeners=CONTROLLER://:9093",
                      "--override", "controller.quorum.bootstrap.servers=localhost:9093")


def test_a_dynamic_quorum_controller_must_say_how_it_starts(tmp_path, capsys):
    d = ("--override", f"log.dirs={tmp_path}/a")
    assert fmt("-t", CLUSTER, *DYNAMIC_CONTROLLER, *d) == 1
    assert "--standalone or --no-initial-controllers" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert fmt("-t", CLUSTER, *DYNAMIC_CONTROLLER, *d, "--standalone") == 0
    assert fmt("-t", CLUSTER, *DYNAMIC_CONTROLLER, *d, "-N", "-g") == 0


def test_standalone_is_for_controllers(tmp_path, capsys):
    assert fmt("-t", CLUSTER, "--standalone", "--override", "process.roles=broker", "--override", "node.id=4",
               "--override", "controller.quorum.voters=1@h:9093", "--override", f"log.dirs={tmp_path}/a") == 1
    assert "--standalone is for a controller" in capsys.readouterr().err


def test_the_embedded_single_node_and_static_quorums_need_no_quorum_flag(tmp_path):
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={tmp_path}/a") == 0
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={tmp_path}/b",
               "--override", "controller.quorum.voters=1@localhost:9093,2@h2:9093,3@h3:9093",
               "--override", "listeners=PLAINTEXT://:9092,CONTROLLER://:9093") == 0


def test_format_accepts_node_shapes_the_server_cannot_run_yet(tmp_path):
    # A cluster's nodes are formatted before they start: a broker-only node.
    assert fmt("-t", CLUSTER, "--override", "process.roles=broker", "--override", "node.id=4",
               "--override", "controller.quorum.voters=1@h:9093", "--override", f"log.dirs={tmp_path}/a") == 0
    assert meta(tmp_path / "a")["node.id"] == "4"


def test_a_formatted_dir_is_what_the_broker_starts_with(tmp_path):
    d = tmp_path / "a"
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={d}") == 0
    before = (d / "meta.properties").read_text()
    assert metadata_log.read_or_create_meta_properties(str(d), 1) == CLUSTER
    assert metadata_log.read_or_create_meta_properties(str(d), 1, CLUSTER) == CLUSTER
    assert (d / "meta.properties").read_text() == before
    with pytest.raises(ConfigError, match=f"belongs to cluster {CLUSTER}, not {OTHER_CLUSTER}"):
        metadata_log.read_or_create_meta_properties(str(d), 1, OTHER_CLUSTER)
    with pytest.raises(ConfigError, match="belongs to node.id 1, but this broker is node.id 2"):
        metadata_log.read_or_create_meta_properties(str(d), 2)


def test_a_meta_properties_written_by_kafka_is_read(tmp_path):
    # Kafka writes it with java.util.Properties.store: a date comment, any order.
    (tmp_path / "meta.properties").write_text(
        "#\n#Tue Dec 02 03:00:00 UTC 2025\nnode.id=1\ndirectory.id=8OyR4QmcQ9yqLxRr3wKyiA\n"
        f"version=1\ncluster.id={CLUSTER}\n")
    assert metadata_log.read_or_create_meta_properties(str(tmp_path), 1) == CLUSTER
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={tmp_path}", "-g") == 0


def test_first_start_still_creates_meta_properties(tmp_path):
    # The zero-setup promise: no format step for the single node.
    cid = metadata_log.read_or_create_meta_properties(str(tmp_path), 1)
    assert is_kafka_uuid(cid)
    props = meta(tmp_path)
    assert props["version"] == "1" and props["node.id"] == "1" and props["cluster.id"] == cid
    assert is_kafka_uuid(props["directory.id"]) and props["directory.id"] != cid
    # with the cluster.id setting, the first start records that id
    os.makedirs(tmp_path / "x")
    assert metadata_log.read_or_create_meta_properties(str(tmp_path / "x"), 1, CLUSTER) == CLUSTER
    assert meta(tmp_path / "x")["cluster.id"] == CLUSTER


def test_an_unwritable_directory_is_reported(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert fmt("-t", CLUSTER, "--override", f"log.dirs={blocker}/data") == 1
    assert capsys.readouterr().err.strip() == (
        f"kbroker: cannot read {blocker}/data/meta.properties: Not a directory")
