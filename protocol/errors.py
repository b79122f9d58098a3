"""Kafka error codes and the one exception type for malformed input.

Everything in :mod:`protocol` that reads bytes raises :class:`ProtocolError`
(and nothing else) when the bytes are not what Kafka would send, so callers
need exactly one ``except`` clause to turn bad input into an error response
or a clean connection close.
"""

from __future__ import annotations

import enum


class ProtocolError(ValueError):
    """Input bytes (or a value to encode) that do not fit the Kafka protocol.

    The message says what was wrong and where (message, field path, byte
    offset when known).  ``path`` lists the enclosing fields, outermost
    first; the codec fills it in as the error travels up through nested
    structs, so building it costs nothing when decoding succeeds.
    """

    def __init__(self, message: str, path: list | None = None):
        super().__init__(message)
        self.message = message
        self.path: list = list(path) if path else []

    def __str__(self) -> str:
        if not self.path:
            return self.message
        # Array indexes read best attached to the field before them.
        parts: list[str] = []
        for p in self.path:
            if p is None:
                continue
            if p.startswith("[") and parts:
                parts[-1] += p
            else:
                parts.append(p)
        return f"{'.'.join(parts)}: {self.message}"


class TooManyElements(ProtocolError):
    """A message holds more array elements than the decode's budget allows.

    A subclass so that a server can tell "over the budget I chose" (decode
    it again elsewhere with a larger one, or refuse it) from malformed.
    """


class ErrorCode(enum.IntEnum):
    """Every error code of the Kafka protocol, named as in Kafka's ``Errors`` enum.

    Numbers are wire values (int16) and never change; names follow Apache
    Kafka 4.2.  ``retriable`` mirrors whether Kafka's exception class for the
    code derives from ``RetriableException``, because clients decide whether
    to retry from that and our responses should lead them to the same choice.
    """

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    REPLICA_NOT_AVAILABLE = 9
    MESSAGE_TOO_LARGE = 10
    STALE_CONTROLLER_EPOCH = 11
    OFFSET_METADATA_TOO_LARGE = 12
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_COMMIT_OFFSET_SIZE = 28
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_SASL_MECHANISM = 33
    ILLEGAL_SASL_STATE = 34
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    TRANSACTION_COORDINATOR_FENCED = 52
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    SECURITY_DISABLED = 54
    OPERATION_NOT_ATTEMPTED = 55
    KAFKA_STORAGE_ERROR = 56
    LOG_DIR_NOT_FOUND = 57
    SASL_AUTHENTICATION_FAILED = 58
    UNKNOWN_PRODUCER_ID = 59
    REASSIGNMENT_IN_PROGRESS = 60
    DELEGATION_TOKEN_AUTH_DISABLED = 61
    DELEGATION_TOKEN_NOT_FOUND = 62
    DELEGATION_TOKEN_OWNER_MISMATCH = 63
    DELEGATION_TOKEN_REQUEST_NOT_ALLOWED = 64
    DELEGATION_TOKEN_AUTHORIZATION_FAILED = 65
    DELEGATION_TOKEN_EXPIRED = 66
    INVALID_PRINCIPAL_TYPE = 67
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FETCH_SESSION_ID_NOT_FOUND = 70
    INVALID_FETCH_SESSION_EPOCH = 71
    LISTENER_NOT_FOUND = 72
    TOPIC_DELETION_DISABLED = 73
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    UNSUPPORTED_COMPRESSION_TYPE = 76
    STALE_BROKER_EPOCH = 77
    OFFSET_NOT_AVAILABLE = 78
    MEMBER_ID_REQUIRED = 79
    PREFERRED_LEADER_NOT_AVAILABLE = 80
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82
    ELIGIBLE_LEADERS_NOT_AVAILABLE = 83
    ELECTION_NOT_NEEDED = 84
    NO_REASSIGNMENT_IN_PROGRESS = 85
    GROUP_SUBSCRIBED_TO_TOPIC = 86
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    THROTTLING_QUOTA_EXCEEDED = 89
    PRODUCER_FENCED = 90
    RESOURCE_NOT_FOUND = 91
    DUPLICATE_RESOURCE = 92
    UNACCEPTABLE_CREDENTIAL = 93
    INCONSISTENT_VOTER_SET = 94
    INVALID_UPDATE_VERSION = 95
    FEATURE_UPDATE_FAILED = 96
    PRINCIPAL_DESERIALIZATION_FAILURE = 97
    SNAPSHOT_NOT_FOUND = 98
    POSITION_OUT_OF_RANGE = 99
    UNKNOWN_TOPIC_ID = 100
    DUPLICATE_BROKER_REGISTRATION = 101
    BROKER_ID_NOT_REGISTERED = 102
    INCONSISTENT_TOPIC_ID = 103
    INCONSISTENT_CLUSTER_ID = 104
    TRANSACTIONAL_ID_NOT_FOUND = 105
    FETCH_SESSION_TOPIC_ID_ERROR = 106
    INELIGIBLE_REPLICA = 107
    NEW_LEADER_ELECTED = 108
    OFFSET_MOVED_TO_TIERED_STORAGE = 109
    FENCED_MEMBER_EPOCH = 110
    UNRELEASED_INSTANCE_ID = 111
    UNSUPPORTED_ASSIGNOR = 112
    STALE_MEMBER_EPOCH = 113
    MISMATCHED_ENDPOINT_TYPE = 114
    UNSUPPORTED_ENDPOINT_TYPE = 115
    UNKNOWN_CONTROLLER_ID = 116
    UNKNOWN_SUBSCRIPTION_ID = 117
    TELEMETRY_TOO_LARGE = 118
    INVALID_REGISTRATION = 119
    TRANSACTION_ABORTABLE = 120
    INVALID_RECORD_STATE = 121
    SHARE_SESSION_NOT_FOUND = 122
    INVALID_SHARE_SESSION_EPOCH = 123
    FENCED_STATE_EPOCH = 124
    INVALID_VOTER_KEY = 125
    DUPLICATE_VOTER = 126
    VOTER_NOT_FOUND = 127
    INVALID_REGULAR_EXPRESSION = 128
    REBOOTSTRAP_REQUIRED = 129
    STREAMS_INVALID_TOPOLOGY = 130
    STREAMS_INVALID_TOPOLOGY_EPOCH = 131
    STREAMS_TOPOLOGY_FENCED = 132
    SHARE_SESSION_LIMIT_REACHED = 133

    @property
    def retriable(self) -> bool:
        """True when Kafka classifies the error as retriable (``RetriableException``)."""
        return self in RETRIABLE_ERRORS

    @property
    def description(self) -> str:
        """One-line human explanation, for logs and error messages."""
        return _DESCRIPTIONS.get(self, "")


# Codes whose Kafka exception class is a RetriableException (directly or via
# InvalidMetadataException).  Clients retry these without surfacing them.
RETRIABLE_ERRORS: frozenset[ErrorCode] = frozenset({
    ErrorCode.CORRUPT_MESSAGE,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.REQUEST_TIMED_OUT,
    ErrorCode.REPLICA_NOT_AVAILABLE,
    ErrorCode.NETWORK_EXCEPTION,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_COORDINATOR,
    ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ErrorCode.NOT_CONTROLLER,
    ErrorCode.CONCURRENT_TRANSACTIONS,
    ErrorCode.KAFKA_STORAGE_ERROR,
    ErrorCode.FETCH_SESSION_ID_NOT_FOUND,
    ErrorCode.INVALID_FETCH_SESSION_EPOCH,
    ErrorCode.LISTENER_NOT_FOUND,
    ErrorCode.FENCED_LEADER_EPOCH,
    ErrorCode.UNKNOWN_LEADER_EPOCH,
    ErrorCode.OFFSET_NOT_AVAILABLE,
    ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE,
    ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE,
    ErrorCode.ELECTION_NOT_NEEDED,
    ErrorCode.UNSTABLE_OFFSET_COMMIT,
    ErrorCode.THROTTLING_QUOTA_EXCEEDED,
    ErrorCode.UNKNOWN_TOPIC_ID,
    ErrorCode.INCONSISTENT_TOPIC_ID,
    ErrorCode.FETCH_SESSION_TOPIC_ID_ERROR,
    ErrorCode.SHARE_SESSION_NOT_FOUND,
    ErrorCode.INVALID_SHARE_SESSION_EPOCH,
    ErrorCode.SHARE_SESSION_LIMIT_REACHED,
})

_E = ErrorCode
# Our own short wording; the numbers and names are what matter on the wire.
_DESCRIPTIONS: dict[ErrorCode, str] = {
    _E.UNKNOWN_SERVER_ERROR: "Unexpected server-side failure.",
    _E.NONE: "No error.",
    _E.OFFSET_OUT_OF_RANGE: "Offset lies outside the partition's stored range.",
    _E.CORRUPT_MESSAGE: "Record batch failed CRC or size checks, or is otherwise malformed.",
    _E.UNKNOWN_TOPIC_OR_PARTITION: "This broker does not host the topic-partition.",
    _E.INVALID_FETCH_SIZE: "Fetch size is not acceptable.",
    _E.LEADER_NOT_AVAILABLE: "Partition has no leader right now (election in progress).",
    _E.NOT_LEADER_OR_FOLLOWER: "This broker is not the leader (or not a replica) for the partition.",
    _E.REQUEST_TIMED_OUT: "The request did not complete in time.",
    _E.BROKER_NOT_AVAILABLE: "The broker is not available.",
    _E.REPLICA_NOT_AVAILABLE: "A replica of the partition is not available.",
    _E.MESSAGE_TOO_LARGE: "A message exceeds the maximum size the broker accepts.",
    _E.STALE_CONTROLLER_EPOCH: "The controller epoch is outdated.",
    _E.OFFSET_METADATA_TOO_LARGE: "Offset commit metadata string is too long.",
    _E.NETWORK_EXCEPTION: "Connection dropped before a response arrived.",
    _E.COORDINATOR_LOAD_IN_PROGRESS: "Coordinator is still loading its state.",
    _E.COORDINATOR_NOT_AVAILABLE: "Coordinator is not available.",
    _E.NOT_COORDINATOR: "This broker is not the coordinator for the key.",
    _E.INVALID_TOPIC_EXCEPTION: "Topic name is invalid or the operation is not allowed on it.",
    _E.RECORD_LIST_TOO_LARGE: "Record batch exceeds the segment size.",
    _E.NOT_ENOUGH_REPLICAS: "Too few in-sync replicas to accept the write.",
    _E.NOT_ENOUGH_REPLICAS_AFTER_APPEND: "Written, but to fewer in-sync replicas than required.",
    _E.INVALID_REQUIRED_ACKS: "The acks value is not allowed.",
    _E.ILLEGAL_GENERATION: "Group generation id does not match.",
    _E.INCONSISTENT_GROUP_PROTOCOL: "Member's protocols do not match the group's.",
    _E.INVALID_GROUP_ID: "Group id is invalid.",
    _E.UNKNOWN_MEMBER_ID: "Coordinator does not know this member id.",
    _E.INVALID_SESSION_TIMEOUT: "Session timeout is outside the broker's allowed range.",
    _E.REBALANCE_IN_PROGRESS: "Group is rebalancing; member must rejoin.",
    _E.INVALID_COMMIT_OFFSET_SIZE: "Offset commit payload size is invalid.",
    _E.TOPIC_AUTHORIZATION_FAILED: "Not authorized for the topic.",
    _E.GROUP_AUTHORIZATION_FAILED: "Not authorized for the group.",
    _E.CLUSTER_AUTHORIZATION_FAILED: "Not authorized for the cluster operation.",
    _E.INVALID_TIMESTAMP: "Record timestamp outside the accepted range.",
    _E.UNSUPPORTED_SASL_MECHANISM: "SASL mechanism is not enabled on the broker.",
    _E.ILLEGAL_SASL_STATE: "Request not valid in the current SASL state.",
    _E.UNSUPPORTED_VERSION: "API version is not supported.",
    _E.TOPIC_ALREADY_EXISTS: "A topic with this name already exists.",
    _E.INVALID_PARTITIONS: "Partition count is invalid.",
    _E.INVALID_REPLICATION_FACTOR: "Replication factor is invalid.",
    _E.INVALID_REPLICA_ASSIGNMENT: "Replica assignment is invalid.",
    _E.INVALID_CONFIG: "Configuration is invalid.",
    _E.NOT_CONTROLLER: "This node is not the active controller.",
    _E.INVALID_REQUEST: "Malformed request or sent to an incompatible broker.",
    _E.UNSUPPORTED_FOR_MESSAGE_FORMAT: "Message format does not support this request.",
    _E.POLICY_VIOLATION: "Request violates a configured policy.",
    _E.OUT_OF_ORDER_SEQUENCE_NUMBER: "Producer sequence number is out of order.",
    _E.DUPLICATE_SEQUENCE_NUMBER: "Producer sequence number is a duplicate.",
    _E.INVALID_PRODUCER_EPOCH: "Producer epoch is outdated.",
    _E.INVALID_TXN_STATE: "Transactional operation invalid in the current state.",
    _E.INVALID_PRODUCER_ID_MAPPING: "Producer id is not the one assigned to this transactional id.",
    _E.INVALID_TRANSACTION_TIMEOUT: "Transaction timeout exceeds the broker maximum.",
    _E.CONCURRENT_TRANSACTIONS: "Another operation on this transaction is in progress.",
    _E.TRANSACTION_COORDINATOR_FENCED: "Sender is no longer the transaction coordinator.",
    _E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "Not authorized for the transactional id.",
    _E.SECURITY_DISABLED: "Security features are turned off.",
    _E.OPERATION_NOT_ATTEMPTED: "Skipped because another operation in the batch failed.",
    _E.KAFKA_STORAGE_ERROR: "Disk error accessing the log.",
    _E.LOG_DIR_NOT_FOUND: "Log directory is not configured on the broker.",
    _E.SASL_AUTHENTICATION_FAILED: "SASL authentication failed.",
    _E.UNKNOWN_PRODUCER_ID: "Broker has no state for this producer id.",
    _E.REASSIGNMENT_IN_PROGRESS: "A partition reassignment is in progress.",
    _E.DELEGATION_TOKEN_AUTH_DISABLED: "Delegation tokens are disabled.",
    _E.DELEGATION_TOKEN_NOT_FOUND: "Delegation token does not exist.",
    _E.DELEGATION_TOKEN_OWNER_MISMATCH: "Principal is not the token's owner or renewer.",
    _E.DELEGATION_TOKEN_REQUEST_NOT_ALLOWED: "Delegation token requests not allowed on this channel.",
    _E.DELEGATION_TOKEN_AUTHORIZATION_FAILED: "Not authorized for the delegation token.",
    _E.DELEGATION_TOKEN_EXPIRED: "Delegation token has expired.",
    _E.INVALID_PRINCIPAL_TYPE: "Principal type is not supported.",
    _E.NON_EMPTY_GROUP: "Group still has members.",
    _E.GROUP_ID_NOT_FOUND: "Group does not exist.",
    _E.FETCH_SESSION_ID_NOT_FOUND: "Fetch session does not exist.",
    _E.INVALID_FETCH_SESSION_EPOCH: "Fetch session epoch does not match.",
    _E.LISTENER_NOT_FOUND: "Leader has no listener matching the request's listener.",
    _E.TOPIC_DELETION_DISABLED: "Topic deletion is disabled.",
    _E.FENCED_LEADER_EPOCH: "Leader epoch in the request is older than the broker's.",
    _E.UNKNOWN_LEADER_EPOCH: "Leader epoch in the request is newer than the broker's.",
    _E.UNSUPPORTED_COMPRESSION_TYPE: "Client cannot handle the partition's compression type.",
    _E.STALE_BROKER_EPOCH: "Broker epoch is outdated.",
    _E.OFFSET_NOT_AVAILABLE: "New leader's high watermark has not caught up yet.",
    _E.MEMBER_ID_REQUIRED: "Member must rejoin with the assigned member id.",
    _E.PREFERRED_LEADER_NOT_AVAILABLE: "Preferred leader is not available.",
    _E.GROUP_MAX_SIZE_REACHED: "Group is at its maximum size.",
    _E.FENCED_INSTANCE_ID: "Static member fenced by another with the same instance id.",
    _E.ELIGIBLE_LEADERS_NOT_AVAILABLE: "No eligible leader for the partition.",
    _E.ELECTION_NOT_NEEDED: "Leader election not needed.",
    _E.NO_REASSIGNMENT_IN_PROGRESS: "No partition reassignment is in progress.",
    _E.GROUP_SUBSCRIBED_TO_TOPIC: "Cannot delete offsets of a topic the group subscribes to.",
    _E.INVALID_RECORD: "Record rejected by broker-side validation.",
    _E.UNSTABLE_OFFSET_COMMIT: "Pending transactional offsets must resolve first.",
    _E.THROTTLING_QUOTA_EXCEEDED: "Throttling quota exceeded.",
    _E.PRODUCER_FENCED: "A newer producer with the same transactional id exists.",
    _E.RESOURCE_NOT_FOUND: "Referenced resource does not exist.",
    _E.DUPLICATE_RESOURCE: "Same resource referenced twice.",
    _E.UNACCEPTABLE_CREDENTIAL: "Credential does not meet acceptance criteria.",
    _E.INCONSISTENT_VOTER_SET: "Sender or receiver is not an expected voter.",
    _E.INVALID_UPDATE_VERSION: "Update version is invalid.",
    _E.FEATURE_UPDATE_FAILED: "Finalized feature update failed.",
    _E.PRINCIPAL_DESERIALIZATION_FAILURE: "Forwarded principal could not be deserialized.",
    _E.SNAPSHOT_NOT_FOUND: "Requested snapshot not found.",
    _E.POSITION_OUT_OF_RANGE: "Snapshot position out of range.",
    _E.UNKNOWN_TOPIC_ID: "This broker does not host the topic id.",
    _E.DUPLICATE_BROKER_REGISTRATION: "Broker id already registered.",
    _E.BROKER_ID_NOT_REGISTERED: "Broker id not registered.",
    _E.INCONSISTENT_TOPIC_ID: "Topic id does not match the log's topic id.",
    _E.INCONSISTENT_CLUSTER_ID: "Cluster id does not match.",
    _E.TRANSACTIONAL_ID_NOT_FOUND: "Transactional id not found.",
    _E.FETCH_SESSION_TOPIC_ID_ERROR: "Fetch session used topic ids inconsistently.",
    _E.INELIGIBLE_REPLICA: "Proposed ISR contains an ineligible replica.",
    _E.NEW_LEADER_ELECTED: "Partition updated, but the leader changed.",
    _E.OFFSET_MOVED_TO_TIERED_STORAGE: "Offset now lives only in tiered storage.",
    _E.FENCED_MEMBER_EPOCH: "Member epoch fenced; member must rejoin.",
    _E.UNRELEASED_INSTANCE_ID: "Instance id still held by another member.",
    _E.UNSUPPORTED_ASSIGNOR: "Assignor or its version is not supported.",
    _E.STALE_MEMBER_EPOCH: "Member epoch is stale.",
    _E.MISMATCHED_ENDPOINT_TYPE: "Request sent to the wrong kind of endpoint.",
    _E.UNSUPPORTED_ENDPOINT_TYPE: "Endpoint type not supported.",
    _E.UNKNOWN_CONTROLLER_ID: "Controller id not known.",
    _E.UNKNOWN_SUBSCRIPTION_ID: "Telemetry subscription id unknown or outdated.",
    _E.TELEMETRY_TOO_LARGE: "Telemetry push exceeds the size limit.",
    _E.INVALID_REGISTRATION: "Broker registration judged invalid.",
    _E.TRANSACTION_ABORTABLE: "Transaction hit an error; abort to continue.",
    _E.INVALID_RECORD_STATE: "Record state does not allow this acknowledgement.",
    _E.SHARE_SESSION_NOT_FOUND: "Share session does not exist.",
    _E.INVALID_SHARE_SESSION_EPOCH: "Share session epoch does not match.",
    _E.FENCED_STATE_EPOCH: "Share-group state epoch does not match.",
    _E.INVALID_VOTER_KEY: "Voter key does not match the replica.",
    _E.DUPLICATE_VOTER: "Voter already in the voter set.",
    _E.VOTER_NOT_FOUND: "Voter not in the voter set.",
    _E.INVALID_REGULAR_EXPRESSION: "Regular expression is invalid.",
    _E.REBOOTSTRAP_REQUIRED: "Client metadata is stale; rebootstrap.",
    _E.STREAMS_INVALID_TOPOLOGY: "Streams topology is invalid.",
    _E.STREAMS_INVALID_TOPOLOGY_EPOCH: "Streams topology epoch is invalid.",
    _E.STREAMS_TOPOLOGY_FENCED: "Streams topology epoch is outdated.",
    _E.SHARE_SESSION_LIMIT_REACHED: "Share session limit reached.",
}
del _E


def error_name(code: int) -> str:
    """Kafka's name for ``code``, or ``UNKNOWN(<code>)`` for codes newer than this table.

    Responses from newer peers may carry codes we do not know; logging must
    still work, so this never raises.
    """
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN({code})"
