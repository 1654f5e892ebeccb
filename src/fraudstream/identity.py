"""Who a transaction belongs to and which transaction it is: the card key and the transaction id.

* **Card key** (:func:`card_key`): the pseudonymous key of a card holder, an HMAC-SHA256 of
  name_1 + name_2 + street under the secret ``CARD_KEY_SECRET``
  (:class:`fraudstream.settings.IdentitySettings`). Per-card history is kept under it and Kafka
  partitions by it; without the secret a list of names cannot be turned into keys. Training
  and serving both key :class:`fraudstream.features.CardState` with it, and since history is per
  key, the secret changes no feature value (a new secret does start every card's history anew).
* **Transaction id** (:func:`transaction_id_of`, :func:`frame_transaction_ids`): the source's
  own id when it has one (Kaggle's ``trans_num``, a ``transaction_id`` column), otherwise one
  derived from the content: an HMAC of card key, time, amount and merchant, plus the number of
  identical transactions before it in the same file or batch (0 for the first), so true
  duplicates stay apart while the same file sent again, or a client retry of ``/score``, gets
  the same ids. Derived ids look like UUIDs (version 8, RFC 9562's custom version); they carry
  no personal value.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fraudstream.settings import IdentitySettings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# The development default of CARD_KEY_SECRET (a WARNING is logged once when it is used).
DEV_CARD_KEY_SECRET: str = IdentitySettings.model_fields["card_key_secret"].default
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)

Secret = str | bytes | None


@functools.cache
def _configured_secret() -> bytes:
    value = IdentitySettings().card_key_secret
    if value == DEV_CARD_KEY_SECRET:
        log.warning(
            "CARD_KEY_SECRET is not set: card keys use the development default, which anyone"
            " can reproduce; set it (the Helm chart does) before processing real data"
        )
    return value.encode()


def reset() -> None:
    """Read ``CARD_KEY_SECRET`` again at the next use (tests)."""
    _configured_secret.cache_clear()


def _key(secret: Secret) -> bytes:
    if secret is None:
        return _configured_secret()
    return secret.encode() if isinstance(secret, str) else secret


def card_key(name_1: str, name_2: str, street: str, secret: Secret = None) -> str:
    """Pseudonymous card-holder key: HMAC-SHA256 of name_1 + name_2 + street, 32 hex digits."""
    message = f"card\x1f{name_1}\x1f{name_2}\x1f{street}".encode()
    return hmac.digest(_key(secret), message, "sha256")[:16].hex()


def _micros(value: Any) -> int:
    """Microseconds since 1970 of a naive local time (datetime or pandas Timestamp)."""
    return (value.replace(tzinfo=None) - _EPOCH) // _MICROSECOND


def _derive(key: bytes, card: str, micros: int, amount: float, merchant: str, n: int) -> str:
    # amounts to 6 decimals: the same text read by two float parsers gives the same id
    message = f"tx\x1f{card}\x1f{micros}\x1f{amount:.6f}\x1f{merchant}\x1f{n}".encode()
    digest = bytearray(hmac.digest(key, message, "sha256")[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def transaction_id(
    card: str,
    time: datetime,
    amount: float,
    merchant: str,
    occurrence: int = 0,
    secret: Secret = None,
) -> str:
    """The id derived from a transaction's content; ``occurrence`` numbers identical ones."""
    return _derive(_key(secret), card, _micros(time), float(amount), merchant, occurrence)


def transaction_id_of(tx: Any, occurrence: int = 0, secret: Secret = None) -> str:
    """A ``Transaction``'s id: its own, or the one derived from its content."""
    if tx.transaction_id:
        return tx.transaction_id
    card = card_key(tx.name_1, tx.name_2, tx.street, secret)
    return transaction_id(card, tx.transaction_time, tx.amount, tx.merch, occurrence, secret)


def transaction_ids(transactions: Sequence[Any], secret: Secret = None) -> list[str]:
    """Ids of a batch of ``Transaction`` objects: their own, or derived, the n-th identical
    transaction without an id getting occurrence n."""
    seen: dict[tuple, int] = {}
    out = []
    for tx in transactions:
        if tx.transaction_id:
            out.append(tx.transaction_id)
            continue
        card = card_key(tx.name_1, tx.name_2, tx.street, secret)
        content = (card, _micros(tx.transaction_time), f"{tx.amount:.6f}", tx.merch)
        n = seen.get(content, 0)
        seen[content] = n + 1
        out.append(transaction_id(card, tx.transaction_time, tx.amount, tx.merch, n, secret))
    return out


def frame_transaction_ids(frame: pd.DataFrame, secret: Secret = None) -> list[str]:
    """Ids of the rows of a loaded file (TETA columns), in row order: the file's own
    ``transaction_id`` where it has one, else derived, the n-th identical row getting
    occurrence n (not its line: a row added elsewhere in the file moves no other id)."""
    import numpy as np

    rows = len(frame)
    given = frame["transaction_id"].tolist() if "transaction_id" in frame else [None] * rows
    missing = [i for i, value in enumerate(given) if not (isinstance(value, str) and value)]
    if not missing:
        return list(given)
    key = _key(secret)
    micros = frame["transaction_time"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    amounts = frame["amount"].to_numpy(dtype=np.float64)
    columns = [frame[c].tolist() for c in ("name_1", "name_2", "street", "merch")]
    cards: dict[tuple[str, str, str], str] = {}
    seen: dict[tuple, int] = {}
    out = list(given)
    for i in missing:
        names = (columns[0][i], columns[1][i], columns[2][i])
        card = cards.get(names)
        if card is None:
            card = cards[names] = card_key(*names, secret=key)
        t, amount, merchant = int(micros[i]), float(amounts[i]), columns[3][i]
        content = (card, t, f"{amount:.6f}", merchant)
        n = seen.get(content, 0)
        seen[content] = n + 1
        out[i] = _derive(key, card, t, amount, merchant, n)
    return out
