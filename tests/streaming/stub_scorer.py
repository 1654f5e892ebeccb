"""A stand-in for the scorer's ``POST /score_batch`` (unit tests only; the end-to-end tests use
the real BentoML service).

Deterministic: score = min(amount / 2000, 0.999), flagged at 0.5. A transaction whose merchant is
``REJECT_MERCHANT`` makes the whole call answer 422, like a scorer rejecting bad input.
Run as a process: ``python tests/streaming/stub_scorer.py PORT``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REJECT_MERCHANT = "fraud_reject_me"
THRESHOLD = 0.5


def stub_score(tx: dict) -> dict:
    score = round(min(float(tx["amount"]) / 2000.0, 0.999), 6)
    flag = score >= THRESHOLD
    return {
        "transaction_id": tx["transaction_id"],
        "score": score,
        "fraud_flag": flag,
        "threshold": THRESHOLD,
        "model_version": "stub:1",
        "reasons": [{"feature": "amount", "value": tx["amount"], "impact": 1.0}] if flag else [],
    }


class Handler(BaseHTTPRequestHandler):
    calls = 0

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, {"ok": True})

    def do_POST(self) -> None:  # noqa: N802
        Handler.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        txs = body["transactions"]
        if any(t.get("merch") == REJECT_MERCHANT for t in txs):
            self._send(422, {"error": "rejected merchant"})
            return
        self._send(200, [stub_score(t) for t in txs])


def serve(port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
