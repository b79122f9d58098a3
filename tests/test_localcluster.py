"""kbroker cluster: the layout (plan), the files it writes (prepare), and one real run."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from kbroker import cli, metadata_log
from kbroker.config import Config, is_kafka_uuid, parse_properties
from kbroker.localcluster import ClusterError, PlanError, plan, prepare, write_properties
from protocol import ApiKey, FrameReader, decode_response, encode_request
from tests.test_server import free_ports


def shapes(tmp_path):
    return [
        plan(1, directory=str(tmp_path / "one"), port=19092),
        plan(3, directory=str(tmp_path / "three"), port=19092),
        plan(2, controllers=3, directory=str(tmp_path / "split"), port=19092),
        plan(3, controllers=1, directory=str(tmp_path / "split1"), port=29092, controller_port=30000,
             overrides=["num.partitions=6", "offsets.topic.replication.factor=3"]),
    ]


# -- plan ----------------------------------------------------------------------


def test_combined_nodes_by_default(tmp_path):
    c = plan(3, directory=str(tmp_path), port=9092)
    assert [n.node_id for n in c.nodes] == [1, 2, 3]
    assert all(n.roles == ("broker", "controller") for n in c.nodes)
    assert [n.broker_port for n in c.nodes] == [9092, 9093, 9094]
    assert [n.controller_port for n in c.nodes] == [9192, 9193, 9194]
    assert c.voters == "1@localhost:9192,2@localhost:9193,3@localhost:9194"
    assert c.bootstrap == "localhost:9092,localhost:9093,localhost:9094"
    n2 = c.nodes[1]
    assert n2.directory == str(tmp_path / "node-2")
    assert n2.config_path == str(tmp_path / "node-2" / "server.properties")
    assert n2.log_path == str(tmp_path / "node-2" / "kbroker.log")
    assert n2.properties == {
        "node.id": "2",
        "process.roles": "broker,controller",
        "controller.quorum.voters": c.voters,
        "listeners": "PLAINTEXT://localhost:9093,CONTROLLER://localhost:9193",
        "advertised.listeners": "PLAINTEXT://localhost:9093",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(tmp_path / "node-2" / "data"),
    }


def test_separate_controllers_then_brokers(tmp_path):
    c = plan(2, controllers=3, directory=str(tmp_path), port=9092)
    assert [(n.node_id, n.roles, n.broker_port, n.controller_port) for n in c.nodes] == [
        (1, ("controller",), None, 9192),
        (2, ("controller",), None, 9193),
        (3, ("controller",), None, 9194),
        (4, ("broker",), 9092, None),
        (5, ("broker",), 9093, None),
    ]
    assert c.voters == "1@localhost:9192,2@localhost:9193,3@localhost:9194"
    assert c.bootstrap == "localhost:9092,localhost:9093"
    assert c.nodes[0].properties["listeners"] == "CONTROLLER://localhost:9192"
    assert "advertised.listeners" not in c.nodes[0].properties
    assert c.nodes[3].properties["listeners"] == "PLAINTEXT://localhost:9092"
    assert c.nodes[3].properties["controller.quorum.voters"] == c.voters


def test_controller_port_can_be_chosen(tmp_path):
    c = plan(2, directory=str(tmp_path), port=5000, controller_port=7000)
    assert [n.ports for n in c.nodes] == [[("PLAINTEXT", 5000), ("CONTROLLER", 7000)],
                                          [("PLAINTEXT", 5001), ("CONTROLLER", 7001)]]


def test_plan_touches_nothing(tmp_path):
    plan(3, directory=str(tmp_path / "cluster"))
    assert not (tmp_path / "cluster").exists()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"nodes": 0}, "--nodes"),
    ({"nodes": 2, "controllers": 0}, "--controllers"),
    ({"nodes": 200, "port": 9092}, "overlap"),
    ({"nodes": 3, "port": 65534, "controller_port": 100}, "65535"),
    ({"nodes": 1, "overrides": ["num.partitions"]}, "key=value"),
    ({"nodes": 1, "overrides": ["node.id=4"]}, "node.id"),
    ({"nodes": 1, "overrides": ["log.dirs=/x"]}, "log.dirs"),
])
def test_bad_layouts_refused(tmp_path, kwargs, fragment):
    with pytest.raises(PlanError, match=re.escape(fragment)):
        plan(directory=str(tmp_path), **kwargs)


def test_overrides_go_to_every_node(tmp_path):
    c = plan(2, controllers=1, directory=str(tmp_path), overrides=["num.partitions=6", "num.partitions=7"])
    assert all(n.properties["num.partitions"] == "7" for n in c.nodes)


def test_written_properties_load_and_validate_for_every_node(tmp_path):
    for c in shapes(tmp_path):
        write_properties(c)
        voters = {n.node_id: ("localhost", n.controller_port) for n in c.controllers}
        for n in c.nodes:
            text = open(n.config_path, encoding="utf-8").read()
            assert parse_properties(text) == n.properties
            config = Config.load(n.config_path)  # every cross-check passes
            assert config.node_id == n.node_id
            assert config["process.roles"] == list(n.roles)
            assert config.quorum_voters == voters
            assert config.log_dirs == [n.data_dir]
            assert not config.embedded_quorum
            if n.is_broker:
                assert [str(l) for l in config.advertised_listeners] == [f"PLAINTEXT://localhost:{n.broker_port}"]
            else:
                assert config.broker_listeners == []
            for key, value in c.overrides.items():
                assert config.source(key) == "STATIC_BROKER_CONFIG" and str(config[key]) == value


def test_single_combined_node_is_runnable_today(tmp_path):
    c = plan(1, directory=str(tmp_path))
    write_properties(c)
    (node,) = c.nodes
    assert Config.load(node.config_path).unsupported_cluster() is None


def test_awkward_directory_names_survive_the_properties_file(tmp_path):
    c = plan(1, directory=str(tmp_path / "a dir=with:odd#chars\\x"))
    write_properties(c)
    (n,) = c.nodes
    assert Config.load(n.config_path).log_dirs == [n.data_dir]


# -- prepare: cluster id and format ------------------------------------------------


def meta(node):
    return metadata_log.read_meta_properties(node.data_dir)


def test_prepare_formats_every_node_with_one_new_cluster_id(tmp_path):
    c = plan(2, controllers=1, directory=str(tmp_path))
    cluster_id = prepare(c)
    assert is_kafka_uuid(cluster_id)
    for n in c.nodes:
        props = meta(n)
        assert props["cluster.id"] == cluster_id and props["node.id"] == str(n.node_id)


def test_prepare_again_reuses_the_cluster_id_and_keeps_the_data(tmp_path):
    first = plan(2, directory=str(tmp_path))
    cluster_id = prepare(first)
    before = {n.node_id: meta(n) for n in first.nodes}
    (tmp_path / "node-1" / "data" / "kept").write_text("x")
    # a larger cluster in the same directory: the new node joins the same cluster
    second = plan(3, directory=str(tmp_path), overrides=["num.partitions=3"])
    assert prepare(second) == cluster_id
    assert {n.node_id: meta(n) for n in second.nodes[:2]} == before
    assert meta(second.nodes[2])["cluster.id"] == cluster_id
    assert (tmp_path / "node-1" / "data" / "kept").read_text() == "x"
    assert "num.partitions=3" in open(second.nodes[0].config_path).read()


def test_prepare_uses_a_given_cluster_id(tmp_path):
    cid = metadata_log.new_uuid()
    c = plan(1, directory=str(tmp_path), overrides=[f"cluster.id={cid}"])
    assert prepare(c) == cid
    other = plan(1, directory=str(tmp_path), overrides=[f"cluster.id={metadata_log.new_uuid()}"])
    with pytest.raises(ClusterError, match=cid):
        prepare(other)


def test_prepare_refuses_a_directory_mixing_two_clusters(tmp_path):
    c = plan(2, directory=str(tmp_path))
    for n, cid in zip(c.nodes, (metadata_log.new_uuid(), metadata_log.new_uuid())):
        metadata_log.format_directories([n.data_dir], n.node_id, cid, out=lambda line: None)
    with pytest.raises(ClusterError, match="different clusters"):
        prepare(c)


def test_prepare_refuses_data_of_another_node(tmp_path):
    prepare(plan(2, directory=str(tmp_path)))
    # node-2/data now holds node 5's data (say, from a run of another shape)
    n2 = tmp_path / "node-2" / "data" / "meta.properties"
    n2.write_text(n2.read_text().replace("node.id=2", "node.id=5"))
    with pytest.raises(ClusterError, match="node 2"):
        prepare(plan(2, directory=str(tmp_path)))


# -- command line ----------------------------------------------------------------


@pytest.mark.parametrize("args", [["--nodes", "0"], ["--controllers", "x"], ["--port", "70000"], ["extra"]])
def test_bad_command_lines_exit_2(args, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["cluster", *args])
    assert e.value.code == 2
    assert "kbroker:" in capsys.readouterr().err


def test_per_node_override_exits_2_before_anything_is_written(tmp_path, capsys):
    assert cli.main(["cluster", "--dir", str(tmp_path / "c"), "--override", "listeners=PLAINTEXT://:1"]) == 2
    assert "listeners" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_invalid_override_value_exits_2(tmp_path, capsys):
    assert cli.main(["cluster", "--nodes", "1", "--dir", str(tmp_path), "--override", "num.partitions=0"]) == 2
    assert "num.partitions" in capsys.readouterr().err


def test_busy_port_exits_1(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        (cport,) = free_ports(1)
        assert cli.main(["cluster", "--nodes", "1", "--dir", str(tmp_path), "--port", str(port),
                         "--controller-port", str(cport)]) == 1
    assert f"port {port} (node 1, PLAINTEXT) is already in use" in capsys.readouterr().err


def test_help_documents_shapes_and_ports(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["cluster", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "ids C+1..C+N" in out and "PORT+100" in out


# -- a real run --------------------------------------------------------------------


class Lines:
    """A child's stdout, line by line, read with deadlines."""

    def __init__(self, stream):
        self.q: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {prefix!r} line in time; output so far: {self.seen}"
            try:
                line = self.q.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"output ended without {prefix!r}: {self.seen}"
            self.seen.append(line)
            if line.startswith(prefix):
                return line


def api_versions(port: int) -> int:
    with socket.create_connection(("localhost", port), timeout=10) as s:
        s.sendall(encode_request(ApiKey.API_VERSIONS, 3,
                                 {"client_software_name": "t", "client_software_version": "1"}, correlation_id=7))
        frames = FrameReader(1 << 20)
        while (frame := frames.next_frame()) is None:
            data = s.recv(65536)
            assert data, "connection closed"
            frames.feed(data)
    corr, body = decode_response(ApiKey.API_VERSIONS, 3, frame)
    assert corr == 7
    return body.error_code


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def one_node_cluster(tmp_path):
    port, cport = free_ports(2)
    proc = subprocess.Popen([sys.executable, "-m", "kbroker", "cluster", "--nodes", "1", "--dir", str(tmp_path),
                             "--port", str(port), "--controller-port", str(cport)],
                            stdout=subprocess.PIPE, text=True)
    lines = Lines(proc.stdout)
    node_line = lines.wait_for("node 1 ", 30)
    pid = int(re.search(r" pid (\d+) ", node_line).group(1))
    try:
        yield proc, lines, port, cport, pid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_one_node_cluster_serves_and_stops_on_sigterm(one_node_cluster, tmp_path):
    proc, lines, port, cport, pid = one_node_cluster
    node_line = lines.seen[-1]
    assert "broker,controller" in node_line and f"PLAINTEXT localhost:{port}" in node_line
    assert f"CONTROLLER localhost:{cport}" in node_line and str(tmp_path / "node-1" / "kbroker.log") in node_line
    assert lines.wait_for("bootstrap:", 40) == f"bootstrap: localhost:{port}"
    assert api_versions(port) == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert gone(pid)
    assert "node 1 stopped (exit status 0)" in lines.wait_for("node 1 stopped", 5)
    with pytest.raises(OSError):
        socket.create_connection(("localhost", port), timeout=5).close()
    # the data stays, formatted for the cluster the first line named
    cluster_id = lines.seen[0].split()[1].rstrip(":")
    assert metadata_log.read_meta_properties(str(tmp_path / "node-1" / "data"))["cluster.id"] == cluster_id


def test_a_node_that_dies_is_reported(one_node_cluster):
    proc, lines, port, cport, pid = one_node_cluster
    lines.wait_for("bootstrap:", 40)
    os.kill(pid, signal.SIGKILL)
    line = lines.wait_for("node 1 exited", 30)
    assert "killed by SIGKILL" in line and "kbroker.log" in line
    # with no node left there is nothing to run: the command ends
    assert proc.wait(timeout=30) == 1
