"""Kafka error codes: numbering, names, retriability."""

from __future__ import annotations

import pytest

from protocol.errors import RETRIABLE_ERRORS, ErrorCode, ProtocolError, error_name


def test_protocol_error_is_value_error():
    assert issubclass(ProtocolError, ValueError)


def test_codes_are_contiguous_through_kafka_4_2():
    values = sorted(int(e) for e in ErrorCode)
    assert values == list(range(-1, 134))
    assert len({e.name for e in ErrorCode}) == len(values)


@pytest.mark.parametrize(
    "code,name",
    [
        (-1, "UNKNOWN_SERVER_ERROR"),
        (0, "NONE"),
        (1, "OFFSET_OUT_OF_RANGE"),
        (2, "CORRUPT_MESSAGE"),
        (3, "UNKNOWN_TOPIC_OR_PARTITION"),
        (6, "NOT_LEADER_OR_FOLLOWER"),
        (10, "MESSAGE_TOO_LARGE"),
        (17, "INVALID_TOPIC_EXCEPTION"),
        (35, "UNSUPPORTED_VERSION"),
        (47, "INVALID_PRODUCER_EPOCH"),
        (58, "SASL_AUTHENTICATION_FAILED"),
        (76, "UNSUPPORTED_COMPRESSION_TYPE"),
        (87, "INVALID_RECORD"),
        (90, "PRODUCER_FENCED"),
        (100, "UNKNOWN_TOPIC_ID"),
        (110, "FENCED_MEMBER_EPOCH"),
        (113, "STALE_MEMBER_EPOCH"),
        (120, "TRANSACTION_ABORTABLE"),
        (121, "INVALID_RECORD_STATE"),
        (122, "SHARE_SESSION_NOT_FOUND"),
        (128, "INVALID_REGULAR_EXPRESSION"),
        (129, "REBOOTSTRAP_REQUIRED"),
        (130, "STREAMS_INVALID_TOPOLOGY"),
        (132, "STREAMS_TOPOLOGY_FENCED"),
        (133, "SHARE_SESSION_LIMIT_REACHED"),
    ],
)
def test_known_codes(code, name):
    assert ErrorCode(code).name == name
    assert error_name(code) == name
    assert ErrorCode[name] == code


def test_error_name_for_unknown_codes():
    assert error_name(999) == "UNKNOWN(999)"
    assert error_name(-2) == "UNKNOWN(-2)"


def test_retriable():
    for e in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.REQUEST_TIMED_OUT,
              ErrorCode.NOT_COORDINATOR, ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.NOT_CONTROLLER,
              ErrorCode.CONCURRENT_TRANSACTIONS, ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.FENCED_LEADER_EPOCH,
              ErrorCode.UNKNOWN_TOPIC_ID, ErrorCode.SHARE_SESSION_NOT_FOUND, ErrorCode.SHARE_SESSION_LIMIT_REACHED):
        assert e.retriable, e
    for e in (ErrorCode.NONE, ErrorCode.UNKNOWN_SERVER_ERROR, ErrorCode.OFFSET_OUT_OF_RANGE,
              ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.PRODUCER_FENCED,
              ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.TOPIC_AUTHORIZATION_FAILED,
              ErrorCode.STALE_MEMBER_EPOCH, ErrorCode.TRANSACTION_ABORTABLE, ErrorCode.REBOOTSTRAP_REQUIRED):
        assert not e.retriable, e
    assert all(isinstance(e, ErrorCode) for e in RETRIABLE_ERRORS)


def test_descriptions():
    for e in ErrorCode:
        assert e.description and "\n" not in e.description


def test_int_compatibility():
    assert ErrorCode.NONE == 0
    assert int(ErrorCode.UNKNOWN_SERVER_ERROR) == -1
    assert ErrorCode(3) is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
