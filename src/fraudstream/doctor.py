"""``fraudstream version`` and ``fraudstream doctor``: what is installed, what is running."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import subprocess

from fraudstream import __version__

PYTHON_PACKAGES = [
    "bentoml",
    "catboost",
    "kafka-python",
    "psycopg2-binary",
    "pgserver",
    "pydantic",
    "prometheus-client",
    "pandas",
    "numpy",
]


def add_version_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_version(args: argparse.Namespace) -> int:
    print(f"fraudstream {__version__}")
    return 0


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"error: {err}"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def checks() -> list[tuple[str, bool, str, bool]]:
    """(name, ok, detail, required) rows."""
    from fraudstream.local.kafka import KAFKA_VERSION
    from fraudstream.local.paths import cache_dir

    rows: list[tuple[str, bool, str, bool]] = []
    for pkg in PYTHON_PACKAGES:
        try:
            rows.append((f"python: {pkg}", True, md.version(pkg), True))
        except md.PackageNotFoundError:
            rows.append((f"python: {pkg}", False, "not installed: run `make venv`", True))

    external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    for tool, cmd, hint, required in [
        (
            "java",
            ["java", "-version"],
            "install Java 17+: apt-get install openjdk-17-jre-headless",
            not external_kafka,
        ),
        ("mvn", ["mvn", "-B", "-v"], "install Maven: apt-get install maven", not external_kafka),
        (
            "helm",
            ["helm", "version", "--short"],
            "run `make tools` (go install helm) or install helm",
            False,
        ),
        ("go", ["go", "version"], "install Go 1.22+ (needed to build helm for chart tests)", False),
    ]:
        if shutil.which(tool):
            rows.append((tool, True, _tool_version(cmd), required))
        else:
            rows.append((tool, False, f"MISSING: {hint}", required))

    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / ".complete"
    rows.append(
        (
            f"kafka {KAFKA_VERSION} jars",
            libs.exists(),
            str(libs.parent)
            if libs.exists()
            else "not downloaded yet (fetched on first use with mvn)",
            False,
        )
    )
    if external_kafka:
        rows.append(
            ("KAFKA_BOOTSTRAP_SERVERS", _kafka_answers(external_kafka), external_kafka, True)
        )
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        pg = POSTGRES_BIN_PATH / "postgres"
        rows.append(
            ("postgresql (pgserver)", pg.exists(), _tool_version([str(pg), "--version"]), True)
        )
    except ImportError:
        rows.append(
            ("postgresql (pgserver)", False, "pgserver not installed: run `make venv`", True)
        )
    if os.environ.get("DATABASE_URL"):
        rows.append(("DATABASE_URL", _pg_answers(os.environ["DATABASE_URL"]), "set", True))
    return rows


def _kafka_answers(bootstrap: str) -> bool:
    try:
        from kafka import KafkaAdminClient

        KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000).close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def _pg_answers(url: str) -> bool:
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def run_doctor(args: argparse.Namespace) -> int:
    rows = checks()
    width = max(len(name) for name, *_ in rows)
    for name, ok, detail, required in rows:
        status = "ok" if ok else ("MISSING" if required else "missing (optional)")
        print(f"{name:<{width}}  {status:<18}  {detail}")
    failed = [name for name, ok, _, required in rows if required and not ok]
    if failed:
        print(f"\n{len(failed)} required item(s) missing: {', '.join(failed)}")
        return 1
    print("\nall required components present")
    return 0
