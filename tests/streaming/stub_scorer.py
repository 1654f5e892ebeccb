"""A stand-in for the scorer's ``POST /score_batch`` (unit tests only; the end-to-end tests use
the real BentoML service).

Deterministic: score = min(amount / 2000, 0.999), flagged at 0.5. A transaction whose merchant is
``REJECT_MERCHANT`` makes the whole call answer 400 with the real scorer's error body
(``{error, field, reason}``), like a scorer rejecting one bad record.

Run as a process: ``python tests/streaming/stub_scorer.py PORT``. Environment, to play a broken
scorer:

- ``STUB_STATUS`` / ``STUB_BODY``: answer every POST with this status and raw body (a wrong URL,
  missing credentials, a proxy in the way, ...);
- ``STUB_ERROR_IDS`` / ``STUB_ERROR_MERCHANT``: answer 500 to any call that contains a
  transaction with one of these ids (comma-separated) or this merchant, like a scorer bug that
  only some records trigger;
- ``STUB_DELAY_S``: wait this long before answering any POST (a slow or hanging scorer);
- ``STUB_MODEL_VERSION``: the ``model_version`` it reports (default ``stub:1``; e.g. a
  challenger's).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REJECT_MERCHANT = "fraud_reject_me"
THRESHOLD = 0.5
MODEL_VERSION = os.environ.get("STUB_MODEL_VERSION") or "stub:1"


def stub_score(tx: dict) -> dict:
    score = round(min(float(tx["amount"]) / 2000.0, 0.999), 6)
    flag = score >= THRESHOLD
    return {
        "transaction_id": tx["transaction_id"],
        "score": score,
        "fraud_flag": flag,
        "threshold": THRESHOLD,
        "model_version": MODEL_VERSION,
        "reasons": [{"feature": "amount", "value": tx["amount"], "impact": 1.0}] if flag else [],
    }


class Handler(BaseHTTPRequestHandler):
    calls = 0
    status = int(os.environ.get("STUB_STATUS") or 0)
    body = os.environ.get("STUB_BODY", '{"error": "stub"}').encode()
    error_ids = frozenset(filter(None, os.environ.get("STUB_ERROR_IDS", "").split(",")))
    error_merchant = os.environ.get("STUB_ERROR_MERCHANT", "")
    delay_s = float(os.environ.get("STUB_DELAY_S") or 0)

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: object) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, {"ok": True})

    def do_POST(self) -> None:  # noqa: N802
        Handler.calls += 1
        raw = self.rfile.read(int(self.headers["content-length"]))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.status:
            self._send(self.status, self.body)
            return
        txs = json.loads(raw)["transactions"]
        for i, tx in enumerate(txs):
            if tx.get("merch") == REJECT_MERCHANT:
                field = f"transactions.{i}.merch"
                self._send(
                    400,
                    {"error": f"{field}: rejected", "field": field, "reason": "invalid_value"},
                )
                return
        if any(
            tx.get("transaction_id") in self.error_ids
            or (self.error_merchant and tx.get("merch") == self.error_merchant)
            for tx in txs
        ):
            self._send(500, {"error": "internal server error"})
            return
        self._send(200, [stub_score(t) for t in txs])


def serve(port: int = 0, **config: object) -> ThreadingHTTPServer:
    """The stub in a thread; ``config`` overrides the handler's attributes (``status``,
    ``body``, ``error_ids``, ``error_merchant``), as the environment does for the process."""
    handler = type("ConfiguredHandler", (Handler,), config) if config else Handler
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
