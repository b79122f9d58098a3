"""ApiVersions: what this broker serves (KIP-511 client software names are accepted and ignored)."""

from protocol import ApiKey, ErrorCode

from . import HANDLERS, handles, on_controller_listener


def api_keys(controller: bool = False, clustered: bool = False) -> list[dict]:
    """The APIs served; the controller RPCs only on a cluster node's controller listeners (as Kafka),
    except DescribeQuorum, which a cluster's brokers forward to the active controller."""
    from .quorum import CONTROLLER_APIS

    return [
        {"api_key": key, "min_version": h.versions[0], "max_version": h.versions[1]}
        for key, h in sorted(HANDLERS.items())
        if controller or key not in CONTROLLER_APIS or (clustered and key == ApiKey.DESCRIBE_QUORUM)
    ]


@handles(ApiKey.API_VERSIONS)
async def handle(broker, header, body):
    return {
        "error_code": ErrorCode.NONE,
        "api_keys": api_keys(broker.quorum is not None and on_controller_listener(broker), broker.quorum is not None),
        "throttle_time_ms": 0,
        "supported_features": [],
        "finalized_features_epoch": -1,
        "finalized_features": [],
        "zk_migration_ready": False,
    }
