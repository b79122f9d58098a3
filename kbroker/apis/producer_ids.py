"""InitProducerId: producer ids for idempotent producers.

Ids come from blocks allocated through the controller (a ProducerIdsRecord in
the metadata log), so an id is never handed out twice, across restarts too.
Transactional ids need the transaction coordinator, which does not exist yet:
they get a clear error instead of a half-working transaction.
"""

from protocol import ApiKey, ErrorCode

from . import handles


@handles(ApiKey.INIT_PRODUCER_ID)
async def handle(broker, header, body):
    if body.transactional_id is not None:
        return {
            "throttle_time_ms": 0,
            "error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "producer_id": -1,
            "producer_epoch": -1,
        }
    if body.producer_id != -1:
        # An idempotent producer bumping its epoch (KIP-360): same id, next epoch.
        epoch = body.producer_epoch + 1
        if epoch > 32767:
            pid = await broker.allocate_producer_id()
            return {"throttle_time_ms": 0, "error_code": 0, "producer_id": pid, "producer_epoch": 0}
        return {"throttle_time_ms": 0, "error_code": 0, "producer_id": body.producer_id, "producer_epoch": epoch}
    pid = await broker.allocate_producer_id()
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "producer_id": pid, "producer_epoch": 0}
