"""An Apache Kafka 4.x broker in KRaft mode (no ZooKeeper) as one local JVM process.

The broker jars come from Maven Central through ``scripts/kafka/pom.xml`` and are cached in
``<cache>/kafka-<version>/libs``; data lives in a directory the caller owns.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import time
from pathlib import Path

from fraudstream.local.paths import REPO_ROOT, cache_dir, free_port, wait_for_port
from fraudstream.local.process import stop_group

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
CLUSTER_ID = "ZnJhdWRzdHJlYW0tbG9jYQ"  # fixed 22-char base64 id; each broker has its own data dir

LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


class MissingToolError(RuntimeError):
    """A program the local infrastructure needs is missing; the message says what to install."""


def require_tool(name: str, purpose: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(
            f"'{name}' was not found on PATH; it is needed {purpose}. Install it: {install_hint}"
        )
    return path


def java_major_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=True).stderr
    # e.g. 'openjdk version "17.0.15" 2025-04-15'
    version = out.split('"')[1] if '"' in out else "0"
    major = version.split(".")[0]
    return int(major) if major.isdigit() else 0


def ensure_kafka_libs() -> Path:
    """Download the broker jars once (file-locked, so parallel test runs share one download)."""
    target = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs = target / "libs"
    marker = target / ".complete"
    if marker.exists():
        return libs
    require_tool(
        "mvn",
        "to fetch the Kafka broker jars from Maven Central",
        "apt-get install maven (or set KAFKA_BOOTSTRAP_SERVERS to an existing broker)",
    )
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        partial = target / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log.info("fetching Kafka %s jars from Maven Central into %s", KAFKA_VERSION, libs)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        marker.write_text(KAFKA_VERSION)
    return libs


class KafkaBroker:
    """One KRaft broker+controller on 127.0.0.1 with free ports, started and stopped by us."""

    def __init__(self, workdir: Path, port: int | None = None, heap: str = "512m"):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self) -> str:
        java = require_tool(
            "java", "to run the local Kafka broker", "apt-get install openjdk-17-jre-headless"
        )
        if java_major_version(java) < 17:
            raise MissingToolError(
                "Kafka 4.x needs Java 17 or newer; install openjdk-17-jre-headless"
            )
        return java

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        props = self.workdir / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.workdir / 'data'}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    # transactions (the bridge's) on a single broker
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    # look for timed-out transactions every second (default 10 s): a killed
                    # bridge's open one stops holding read_committed readers soon after its
                    # BRIDGE_TRANSACTION_TIMEOUT_MS
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=1",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        (self.workdir / "log4j2.yaml").write_text(LOG4J2)
        return props

    def start(self, timeout: float = 60.0) -> KafkaBroker:
        java = self._java()
        libs = ensure_kafka_libs()
        props = self._write_config()
        classpath = f"{libs}/*"
        if not (self.workdir / "data" / "meta.properties").exists():
            subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    CLUSTER_ID,
                    "-c",
                    str(props),
                    "--ignore-formatted",
                ],
                check=True,
                capture_output=True,
            )
        with open(self.log_path, "ab") as logfile:
            self.proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap}",
                    "-Xms128m",
                    "-XX:+UseSerialGC",
                    f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(props),
                ],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for_port("127.0.0.1", self.port, timeout) or not self._answers(timeout):
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"Kafka broker did not start on {self.bootstrap}:\n{tail}")
        return self

    def _answers(self, timeout: float) -> bool:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                admin.list_topics()
                admin.close()
                return True
            except Exception:  # noqa: BLE001 - the broker is still coming up
                time.sleep(0.3)
        return False

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data (for failure tests)."""
        self.stop()
        self.start()
