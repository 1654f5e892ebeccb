"""``fraudstream topics create``: the pipeline's Kafka topics, explicitly partitioned; idempotent.

Topics (names from :class:`fraudstream.settings.KafkaSettings`):

- ``transactions`` (key = card-holder key, value = Transaction JSON)
- ``scoring`` (key = transaction_id, value = score JSON)
- ``transactions.dlq`` (original key and bytes; reason and source offset in headers)
- ``labels`` (key = transaction_id, value = Label JSON: :mod:`fraudstream.labels`)
- ``scoring.shadow`` (the challenger's results, best effort: :mod:`fraudstream.shadow`)

An existing topic is left as it is (a topic with fewer partitions than asked is reported, never
shrunk or silently grown, because growing re-maps keys to partitions).
"""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def create_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    retention_ms: int,
    replication_factor: int | None = None,
    timeout_s: float = 30.0,
    retention_bytes: int = -1,
) -> dict[str, str]:
    """Create the topics that are missing; return {name: 'created' | 'exists (N partitions)'}."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        if replication_factor is None:
            brokers = len(admin.describe_cluster().get("brokers", [])) or 1
            replication_factor = min(3, brokers)
        existing = set(admin.list_topics())
        result: dict[str, str] = {}
        missing = [n for n in names if n not in existing]
        for name in missing:
            topic = NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs={
                    "retention.ms": str(retention_ms),
                    "retention.bytes": str(retention_bytes),
                    "min.insync.replicas": str(min(2, replication_factor)),
                },
            )
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                result[name] = "created"
            except TopicAlreadyExistsError:  # a concurrent run created it
                result[name] = "exists"
        _wait_for_leaders(admin, missing, timeout_s)
        described = {t["name"]: t for t in admin.describe_topics(names)}
        for name in names:
            count = len(described.get(name, {}).get("partitions", []))
            if name not in result:
                result[name] = f"exists ({count} partitions)"
            if count < partitions:
                log.warning("topic %s has %d partitions (asked for %d)", name, count, partitions)
        return result
    finally:
        admin.close()


def _wait_for_leaders(admin: object, names: list[str], timeout_s: float) -> None:
    """Until every partition of the new topics has a leader (so producers don't race creation)."""
    if not names:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            topics = admin.describe_topics(names)  # type: ignore[attr-defined]
            if all(
                t.get("error_code", 0) == 0
                and t["partitions"]
                and all(p.get("leader_id", -1) >= 0 for p in t["partitions"])
                for t in topics
            ):
                return
        except Exception:  # noqa: BLE001 - metadata not there yet
            pass
        time.sleep(0.2)
    log.warning("topics %s have no leaders after %.0fs", names, timeout_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fraudstream.settings import KafkaSettings

    kafka = KafkaSettings()
    parser.add_argument("action", choices=["create"], help="create the missing topics")
    parser.add_argument("--bootstrap", default=None, help="default: $KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument(
        "--partitions",
        type=int,
        default=kafka.topic_partitions,
        help="partitions per topic (default: $TOPIC_PARTITIONS or 6)",
    )
    parser.add_argument(
        "--retention-ms",
        type=int,
        default=kafka.topic_retention_ms,
        help="retention (default: $TOPIC_RETENTION_MS or 7 days)",
    )
    parser.add_argument(
        "--retention-bytes",
        type=int,
        default=kafka.topic_retention_bytes,
        help="most bytes per partition (default: $TOPIC_RETENTION_BYTES or -1, no limit)",
    )
    parser.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="default: min(3, number of brokers)",
    )


def run(args: argparse.Namespace) -> int:
    from fraudstream.logs import setup_logging
    from fraudstream.settings import KafkaSettings, LogSettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    kafka = KafkaSettings()
    names = [
        kafka.topic_transactions,
        kafka.topic_scoring,
        kafka.topic_dlq,
        kafka.topic_labels,
        kafka.topic_scoring_shadow,
    ]
    result = create_topics(
        args.bootstrap or kafka.kafka_bootstrap_servers,
        names,
        partitions=args.partitions,
        retention_ms=args.retention_ms,
        replication_factor=args.replication_factor,
        retention_bytes=args.retention_bytes,
    )
    for name in names:
        print(f"{name}: {result[name]}")
    return 0
