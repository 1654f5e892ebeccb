"""The analyst page in a real browser: a CSV uploaded through Streamlit goes through the real
pipeline (replay -> Kafka -> bridge -> BentoML scorer -> writer -> PostgreSQL) and the page
shows its flagged transactions, reports its bad rows, and shows no personal data."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import psycopg2
import pytest

from fraudstream.local.paths import REPO_ROOT, free_port, wait_for_port

from .conftest import Component

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N_GOOD = 300


def _upload_file(source_csv: Path, target: Path) -> tuple[list[dict], int]:
    """The first N_GOOD rows (frauds among them) plus two bad rows; returns (good rows, bad)."""
    with source_csv.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        fields = reader.fieldnames
    frauds = [r for r in rows if r["target"] == "1"][:20]
    good = frauds + [r for r in rows if r["target"] == "0"][: N_GOOD - len(frauds)]
    good.sort(key=lambda r: r["transaction_time"])
    bad = [dict(good[0], amount="-5"), dict(good[1], cat_id="lottery")]
    with target.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(good[:10] + bad + good[10:])
    return good, len(bad)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
def test_upload_shows_flagged_transactions_and_rejected_rows(
    pipeline_factory, scorer, transactions_csv, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    pipe = pipeline_factory(scorer.url)
    pipe.component("bridge").start()
    pipe.component("writer").start()
    upload = tmp_path / "upload.csv"
    good, n_bad = _upload_file(transactions_csv, upload)

    port = free_port()
    ui = Component(
        "ui",
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO_ROOT / "ui" / "app.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        pipe.env(UI_RESULT_TIMEOUT_S="90"),
        tmp_path,
    ).start()
    pipe.components.append(ui)
    assert wait_for_port("127.0.0.1", port, 60), ui.tail()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        expect(page.get_by_text("Score a CSV")).to_be_visible(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(upload))
        expect(page.get_by_text(f"{N_GOOD:,} valid rows")).to_be_visible(timeout=60_000)
        expect(page.get_by_text(f"{n_bad} rejected")).to_be_visible()
        page.get_by_role("button", name=f"Score {N_GOOD} transactions").click()
        expect(page.get_by_text("Flagged transactions")).to_be_visible(timeout=120_000)
        page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
        shown = page.locator("[data-testid=stMetric]").all_inner_texts()
        body = page.inner_text("body")
        browser.close()

    # The page's figures are the ones the pipeline stored.
    with psycopg2.connect(pipe.pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE fraud_flag) FROM scores")
        stored, flagged = cur.fetchone()
    assert stored == N_GOOD
    assert flagged > 0, "the upload holds 20 labelled frauds; some must be flagged"
    metrics = {m.split("\n")[0]: m.split("\n")[-1] for m in shown}
    assert metrics["scored"] == f"{N_GOOD:,}"
    assert metrics["flagged as fraud"] == f"{flagged:,}"
    # Bad rows are reported with what is wrong; personal data never reaches the page.
    assert "amount must be positive, got '-5'" in body
    assert "unknown category 'lottery'" in body
    for row in good[:50]:
        assert row["name_2"] not in body and row["street"] not in body
    ui.terminate(20)
