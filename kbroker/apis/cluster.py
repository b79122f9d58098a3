"""DescribeCluster: the cluster id, a controller id for admin requests, and the brokers.

KRaft brokers never expose the controllers to clients through a broker
listener: a request for endpoint type CONTROLLER sent here is answered with
MISMATCHED_ENDPOINT_TYPE, and ``controller_id`` names a live broker (admin
requests meant for "the controller" are forwarded by brokers).  With one
combined node that is this node.

A cluster node asked on its controller listener answers as Kafka's
controllers do (KIP-919): endpoint type CONTROLLER lists the voters, and
``controller_id`` is the active controller (-1 while there is none).
"""

from protocol import ApiKey, ErrorCode

from . import endpoint_of, handles, on_controller_listener

ENDPOINT_BROKER = 1
ENDPOINT_CONTROLLER = 2
_ENDPOINT_NAMES = {ENDPOINT_BROKER: "BROKER", ENDPOINT_CONTROLLER: "CONTROLLER"}

# AclOperation codes Kafka supports on the CLUSTER resource; with no authorizer
# every one of them is allowed.
# CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE
CLUSTER_OPERATIONS = (5, 7, 8, 9, 10, 11, 12)
UNKNOWN_OPERATIONS = -2147483648


def operations_bitfield(ops) -> int:
    bits = 0
    for op in ops:
        bits |= 1 << op
    return bits


@handles(ApiKey.DESCRIBE_CLUSTER)
async def handle(broker, header, body):
    version = header.api_version
    endpoint_type = body.endpoint_type if version >= 1 else ENDPOINT_BROKER
    base = {"throttle_time_ms": 0, "endpoint_type": endpoint_type, "cluster_id": broker.cluster_id,
            "controller_id": -1, "brokers": [], "cluster_authorized_operations": UNKNOWN_OPERATIONS}
    if endpoint_type not in _ENDPOINT_NAMES:
        return {**base,
                "error_code": ErrorCode.INVALID_REQUEST if version == 0 else ErrorCode.UNSUPPORTED_ENDPOINT_TYPE,
                "error_message": f"Unsupported endpoint type {endpoint_type}"}
    if broker.quorum is not None and on_controller_listener(broker):
        return _controllers(broker, base, version, endpoint_type, body)
    if endpoint_type != ENDPOINT_BROKER:
        return {**base,
                "error_code": ErrorCode.INVALID_REQUEST if version == 0 else ErrorCode.MISMATCHED_ENDPOINT_TYPE,
                "error_message": "The request was sent to an endpoint of type BROKER, but we wanted an endpoint "
                                 f"of type {_ENDPOINT_NAMES[endpoint_type]}"}
    include_fenced = version >= 2 and body.include_fenced_brokers
    brokers = []
    for b in sorted(broker.image.brokers.values(), key=lambda b: b.broker_id):
        e = endpoint_of(b)
        if (b.fenced and not include_fenced) or e is None:
            continue
        brokers.append({"broker_id": b.broker_id, "host": e.host, "port": e.port, "rack": b.rack,
                        "is_fenced": b.fenced})
    live = [b["broker_id"] for b in brokers if not b["is_fenced"]]
    controller = broker.node_id if broker.node_id in live else (live[0] if live else -1)
    ops = operations_bitfield(CLUSTER_OPERATIONS) if body.include_cluster_authorized_operations else UNKNOWN_OPERATIONS
    return {**base, "error_code": ErrorCode.NONE, "error_message": None, "controller_id": controller,
            "brokers": brokers, "cluster_authorized_operations": ops}


def _controllers(broker, base, version, endpoint_type, body):
    if endpoint_type != ENDPOINT_CONTROLLER:
        return {**base,
                "error_code": ErrorCode.INVALID_REQUEST if version == 0 else ErrorCode.MISMATCHED_ENDPOINT_TYPE,
                "error_message": "The request was sent to an endpoint of type CONTROLLER, but we wanted an endpoint "
                                 f"of type {_ENDPOINT_NAMES[endpoint_type]}"}
    quorum = broker.quorum
    leader = quorum.leader_id
    ops = operations_bitfield(CLUSTER_OPERATIONS) if body.include_cluster_authorized_operations else UNKNOWN_OPERATIONS
    return {**base, "error_code": ErrorCode.NONE, "error_message": None,
            "controller_id": -1 if leader is None else leader,
            "brokers": [{"broker_id": v, "host": h, "port": p, "rack": None, "is_fenced": False}
                        for v, (h, p) in sorted(quorum.voters.items())],
            "cluster_authorized_operations": ops}
