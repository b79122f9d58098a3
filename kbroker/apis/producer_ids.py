"""InitProducerId: producer ids for idempotent producers.

Ids come from blocks allocated through the controller (a ProducerIdsRecord in
the metadata log), so an id is never handed out twice, across restarts too.

Without a transactional id Kafka "blindly accepts" the request: whatever
producer id and epoch the client sends (-1/-1 for a new producer, or its
current pair when an idempotent producer resets after an error, KIP-360),
the answer is a fresh id with epoch 0.  Echoing the client's pair back
would let any client claim any producer id (and epochs Kafka never
issues).  Transactional ids need the transaction coordinator, which does
not exist yet: they get a clear error instead of a half-working
transaction; an empty one is INVALID_REQUEST, as in Kafka.
"""

from protocol import ApiKey, ErrorCode

from ..broker import ProducerIdsUnavailable
from ..metadata.errors import MetadataWriteFailed
from . import handles


def _answer(error_code, producer_id=-1, producer_epoch=-1):
    return {"throttle_time_ms": 0, "error_code": error_code, "producer_id": producer_id,
            "producer_epoch": producer_epoch}


@handles(ApiKey.INIT_PRODUCER_ID)
async def handle(broker, header, body):
    if body.transactional_id == "":
        return _answer(ErrorCode.INVALID_REQUEST)
    if body.transactional_id is not None:
        return _answer(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    try:
        pid = await broker.allocate_producer_id()
    except MetadataWriteFailed:
        # Retriable for the client; the block was not allocated.
        return _answer(ErrorCode.KAFKA_STORAGE_ERROR)
    except ProducerIdsUnavailable:
        # A cluster node without a block and no controller to get one from:
        # Kafka's retriable answer for exactly that wait.
        return _answer(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
    return _answer(ErrorCode.NONE, pid, 0)
