"""Where per-card history lives between scoring calls: in memory or in PostgreSQL.

A store turns a batch of history events (see :data:`fraudstream.features.Event`, already in
processing order) into their history features and remembers them, through the same
:meth:`fraudstream.features.CardState.step` as the batch path. Recording is idempotent on the
transaction id: an id seen before is not added again and gets the features it got the first time.

Only pseudonymous card keys (:func:`fraudstream.identity.card_key`), times, amounts, category
indices, merchant codes and hours are kept; never names, streets or home coordinates.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from fraudstream.features import EPOCH, CardState, Event

if TYPE_CHECKING:
    from fraudstream.settings import DatabaseSettings, HistorySettings

log = logging.getLogger(__name__)


class HistoryStore(ABC):
    """Per-card history behind one method, :meth:`apply`; implementations are thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def apply(self, ids: Sequence[str], events: Sequence[Event]) -> list[tuple]:
        """History features of each event (in the given order), then record the events.

        ``ids[i]`` is the transaction id of ``events[i]``; a repeated id (earlier call or same
        batch) does not change the history and returns the features recorded for it.
        """
        if len(ids) != len(events):
            raise ValueError("ids and events differ in length")
        keys = sorted({e[0] for e in events})
        with self._lock, self._session(keys, list(dict.fromkeys(ids))) as (states, seen):
            out: list[tuple] = []
            new: list[tuple[str, Event, tuple]] = []
            for tx_id, event in zip(ids, events, strict=True):
                known = seen.get(tx_id)
                if known is not None:
                    out.append(known)
                    continue
                state = states.get(event[0])
                if state is None:
                    state = states[event[0]] = CardState()
                features = state.step(*event[1:])
                seen[tx_id] = features
                new.append((tx_id, event, features))
                out.append(features)
            self._record(states, new)
        return out

    @abstractmethod
    @contextmanager
    def _session(
        self, keys: list[str], ids: list[str]
    ) -> Iterator[tuple[dict[str, CardState], dict[str, tuple]]]:
        """Yield (states of these keys that exist, features of these ids already seen)."""

    @abstractmethod
    def _record(self, states: dict[str, CardState], new: list[tuple[str, Event, tuple]]) -> None:
        """Persist the updated states and the newly seen ids (inside the session)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections)."""


class InMemoryHistoryStore(HistoryStore):
    """History in this process (training, tests, a scorer without a database).

    Memory is capped: seen ids are remembered up to ``max_ids`` (oldest forgotten first), card
    states up to ``max_cards`` (the least recently used card is forgotten first: its next
    transaction starts a new history). The scorer takes both from
    :class:`fraudstream.settings.HistorySettings` (``HISTORY_MAX_IDS``, ``HISTORY_MAX_CARDS``).
    """

    def __init__(self, max_ids: int = 1_000_000, max_cards: int = 1_000_000) -> None:
        super().__init__()
        # least recently used first
        self.states: OrderedDict[str, CardState] = OrderedDict()
        self._seen: OrderedDict[str, tuple] = OrderedDict()
        self.max_ids = max_ids
        self.max_cards = max_cards

    @classmethod
    def from_settings(cls, settings: HistorySettings | None = None) -> InMemoryHistoryStore:
        """A store with the caps of ``settings`` (default: the environment's)."""
        from fraudstream.settings import HistorySettings

        s = settings or HistorySettings()
        return cls(max_ids=s.history_max_ids, max_cards=s.history_max_cards)

    @contextmanager
    def _session(
        self, keys: list[str], ids: list[str]
    ) -> Iterator[tuple[dict[str, CardState], dict[str, tuple]]]:
        seen = {i: self._seen[i] for i in ids if i in self._seen}
        for key in keys:  # these cards are used now
            if key in self.states:
                self.states.move_to_end(key)
        yield self.states, seen

    def _record(self, states: dict[str, CardState], new: list[tuple[str, Event, tuple]]) -> None:
        for tx_id, _, features in new:
            self._seen[tx_id] = features
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        while len(self.states) > self.max_cards:
            self.states.popitem(last=False)


class PostgresHistoryStore(HistoryStore):
    """History in PostgreSQL (tables of migrations ``0001``/``0003``), shared by replicas.

    Each :meth:`apply` is one transaction that locks the rows of the cards involved
    (``SELECT ... FOR UPDATE`` in key order), so concurrent scorers never lose an update.
    The connection comes from :func:`fraudstream.database.connect`: a lock another transaction
    holds longer than ``DB_LOCK_TIMEOUT_MS``, a statement longer than
    ``DB_STATEMENT_TIMEOUT_MS``, a server gone away all raise a :class:`psycopg2.Error` out of
    :meth:`apply` (the scorer answers 503, the caller retries) instead of waiting without end.
    """

    def __init__(
        self, dsn: str, migrate: bool = True, settings: DatabaseSettings | None = None
    ) -> None:
        super().__init__()
        self.dsn = dsn
        self.settings = settings
        if migrate:
            from fraudstream.migrations import migrate as apply_migrations

            apply_migrations(dsn, settings)
        self._conn = None
        self._cur = None

    def _connection(self):  # noqa: ANN202 - psycopg2 connection
        from fraudstream.database import connect

        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, self.settings, application_name="fraudstream-history")
        return self._conn

    @contextmanager
    def _session(
        self, keys: list[str], ids: list[str]
    ) -> Iterator[tuple[dict[str, CardState], dict[str, tuple]]]:
        from psycopg2.extras import execute_values

        conn = self._connection()
        try:
            with conn, conn.cursor() as cur:
                states: dict[str, CardState] = {}
                missing = keys
                while missing:
                    # make sure a row exists for every key, so FOR UPDATE locks new cards too
                    execute_values(
                        cur,
                        "INSERT INTO card_history (card_key) VALUES %s ON CONFLICT DO NOTHING",
                        [(k,) for k in missing],
                        page_size=1000,
                    )
                    cur.execute(
                        "SELECT card_key, state FROM card_history WHERE card_key = ANY(%s)"
                        " ORDER BY card_key FOR UPDATE",
                        (missing,),
                    )
                    rows = cur.fetchall()
                    states.update((k, CardState.from_json(state)) for k, state in rows if state)
                    # a row `fraudstream history prune` deleted between the two statements:
                    # insert it again (the prune only deletes cards idle for weeks)
                    locked = {k for k, _ in rows}
                    missing = [k for k in missing if k not in locked]
                cur.execute(
                    "SELECT transaction_id, features FROM card_history_seen"
                    " WHERE transaction_id = ANY(%s)",
                    (ids,),
                )
                seen = {tx_id: tuple(features) for tx_id, features in cur.fetchall()}
                self._cur = cur
                yield states, seen
        except Exception:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            self._cur = None

    def _record(self, states: dict[str, CardState], new: list[tuple[str, Event, tuple]]) -> None:
        from psycopg2.extras import execute_values

        cur = self._cur
        touched = sorted({event[0] for _, event, _ in new})
        if not touched:
            return
        execute_values(
            cur,
            "UPDATE card_history AS h SET state = v.state, updated_at = now()"
            " FROM (VALUES %s) AS v(card_key, state) WHERE h.card_key = v.card_key",
            [(k, states[k].to_json()) for k in touched],
            page_size=1000,
        )
        execute_values(
            cur,
            "INSERT INTO card_history_seen (transaction_id, card_key, transaction_time, features)"
            " VALUES %s ON CONFLICT (transaction_id) DO NOTHING",
            [
                (tx_id, event[0], EPOCH + timedelta(seconds=event[1]), list(features))
                for tx_id, event, features in new
            ],
            page_size=1000,
        )

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
