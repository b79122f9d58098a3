"""kcat (librdkafka CLI) against a real kbroker: -P, -C and -L -J."""

import shutil

import pytest

from compat.clients import check_roundtrip, consume_kcat, kcat_metadata, make_messages, produce_kcat

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")


def test_produce_consume_1000_keyed(broker, topic):
    # kcat -H puts the same headers on every message.
    msgs = make_messages(1000, per_message_headers=False)
    produce_kcat(broker.bootstrap, topic.name, msgs)
    got = consume_kcat(broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, None, got, topic.partitions)


def test_metadata_json(broker, topic):
    md = kcat_metadata(broker.bootstrap, topic.name)
    assert md["brokers"], md
    assert any(b["name"].endswith(f":{broker.port}") for b in md["brokers"]), md["brokers"]
    (t,) = [t for t in md["topics"] if t["topic"] == topic.name]
    assert "error" not in t or not t["error"]
    assert sorted(p["partition"] for p in t["partitions"]) == list(range(topic.partitions))
    ids = {b["id"] for b in md["brokers"]}
    assert all(p["leader"] in ids for p in t["partitions"])


def test_metadata_all_topics(broker, topic):
    md = kcat_metadata(broker.bootstrap)
    assert topic.name in {t["topic"] for t in md["topics"]}
