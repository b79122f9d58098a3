"""DescribeLogDirs: each log directory, the partitions in it and their sizes.

``offset_lag`` is 0 and ``is_future_key`` false: there are no future logs
(no AlterReplicaLogDirs moves).  The metadata log lives in the first log dir
but, as in Kafka, is not a partition of any topic and is not listed.
``total_bytes`` / ``usable_bytes`` (v4) are those of the file system holding
the directory (usable: what an unprivileged process may still write).  A log
dir taken offline by an I/O error is answered KAFKA_STORAGE_ERROR with no
partitions, as Kafka reports an offline dir.
"""

import os

from protocol import ApiKey, ErrorCode

from . import handles

METADATA_TOPIC = "__cluster_metadata"


def _space(path: str) -> tuple[int, int]:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def describe_log_dirs(broker, wanted: dict[str, set[int]] | None) -> list[dict]:
    by_dir: dict[str, dict[str, list[dict]]] = {d: {} for d in broker.log_dirs}
    for (topic, index), plog in broker.logs:
        if topic == METADATA_TOPIC or plog.closed:
            continue
        if wanted is not None and index not in wanted.get(topic, ()):
            continue
        parent = os.path.dirname(os.path.normpath(plog.path))
        topics = by_dir.get(parent)
        if topics is None:
            continue
        topics.setdefault(topic, []).append(
            {"partition_index": index, "partition_size": plog.size_in_bytes, "offset_lag": 0, "is_future_key": False}
        )
    results = []
    offline = broker.logs.offline_dirs if broker.logs is not None else {}
    for d, topics in by_dir.items():
        if d in offline:
            results.append({"error_code": ErrorCode.KAFKA_STORAGE_ERROR, "log_dir": d, "topics": [],
                            "total_bytes": -1, "usable_bytes": -1})
            continue
        try:
            total, usable = _space(d)
        except OSError:
            results.append({"error_code": ErrorCode.KAFKA_STORAGE_ERROR, "log_dir": d, "topics": [],
                            "total_bytes": -1, "usable_bytes": -1})
            continue
        results.append({
            "error_code": ErrorCode.NONE,
            "log_dir": d,
            "topics": [{"name": t, "partitions": sorted(ps, key=lambda p: p["partition_index"])}
                       for t, ps in sorted(topics.items())],
            "total_bytes": total,
            "usable_bytes": usable,
        })
    return results


@handles(ApiKey.DESCRIBE_LOG_DIRS)
async def handle(broker, header, body):
    wanted = None
    if body.topics is not None:
        wanted = {}
        for t in body.topics:
            wanted.setdefault(t.topic, set()).update(t.partitions)
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "results": describe_log_dirs(broker, wanted)}
