"""The one place PostgreSQL connections are made: every connection gets bounded waits.

:func:`connect` adds, as libpq options, a connect timeout, TCP keepalives and a TCP user
timeout (a vanished server is noticed instead of waited for), and a server-side
``statement_timeout`` and ``lock_timeout`` (a query or a lock wait that never ends fails with
a :class:`psycopg2.Error` instead). Values come from
:class:`fraudstream.settings.DatabaseSettings` (``DB_*`` environment variables); a caller may
override the two server-side limits, and a parameter written in the DSN itself wins over the
defaults (``?connect_timeout=1``, ``options=-c lock_timeout=500``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fraudstream.settings import DatabaseSettings

if TYPE_CHECKING:
    from psycopg2.extensions import connection


def database_url(given: str | None, command: str) -> str:
    """``--database-url`` when given, else ``$DATABASE_URL``; "" after telling the user (on
    stderr, naming ``command``) when neither is set: the command then exits with code 2."""
    import sys

    dsn = given or DatabaseSettings().database_url
    if not dsn:
        print(
            f"fraudstream {command}: no database: set DATABASE_URL or pass --database-url",
            file=sys.stderr,
        )
    return dsn


def database_error(command: str, err: Exception) -> int:
    """Tell the user on stderr that ``fraudstream command`` failed on the database (the error's
    class and first line: PostgreSQL's messages name objects, not row values); exit code 1."""
    import sys

    text = str(err).strip()
    detail = text.splitlines()[0] if text else ""
    print(f"fraudstream {command}: {type(err).__name__}: {detail}", file=sys.stderr)
    return 1


def connection_options(
    dsn: str,
    settings: DatabaseSettings | None = None,
    *,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    application_name: str | None = None,
) -> dict[str, Any]:
    """The libpq keyword parameters :func:`connect` passes besides ``dsn``.

    Parameters the DSN sets itself are left out (the DSN's value applies); the server-side
    limits go first in ``options``, so a ``-c`` setting of the DSN's own ``options`` (read
    after them) wins.
    """
    from psycopg2.extensions import parse_dsn

    s = settings or DatabaseSettings()
    given = parse_dsn(dsn)
    statement = s.db_statement_timeout_ms if statement_timeout_ms is None else statement_timeout_ms
    lock = s.db_lock_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    params: dict[str, Any] = {
        "connect_timeout": s.db_connect_timeout_s,
        "keepalives": int(s.db_keepalives),
        "keepalives_idle": s.db_keepalives_idle_s,
        "keepalives_interval": s.db_keepalives_interval_s,
        "keepalives_count": s.db_keepalives_count,
        "tcp_user_timeout": s.db_tcp_user_timeout_ms,
    }
    if application_name:
        params["application_name"] = application_name
    params = {key: value for key, value in params.items() if key not in given}
    limits = f"-c statement_timeout={int(statement)} -c lock_timeout={int(lock)}"
    params["options"] = f"{limits} {given['options']}" if given.get("options") else limits
    return params


def connect(
    dsn: str,
    settings: DatabaseSettings | None = None,
    *,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    application_name: str | None = None,
) -> connection:
    """A psycopg2 connection to ``dsn`` with the limits of :func:`connection_options`.

    ``settings`` defaults to the environment's :class:`DatabaseSettings`;
    ``statement_timeout_ms`` / ``lock_timeout_ms`` override its server-side limits for this
    connection (0 = no limit, e.g. for a migration that builds an index on a large table).
    """
    import psycopg2

    options = connection_options(
        dsn,
        settings,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
        application_name=application_name,
    )
    return psycopg2.connect(dsn, **options)


T = TypeVar("T")


def read_for_command(
    given: str | None, command: str, application_name: str, read: Callable[[Any], T]
) -> tuple[int, T | None]:
    """For a command that reads the database once: ``(0, read(connection))``, or the exit code
    and None after telling the user why (no database: 2, :func:`database_url`; a database
    error: 1, :func:`database_error`). The connection is closed either way."""
    import psycopg2

    dsn = database_url(given, command)
    if not dsn:
        return 2, None
    try:
        conn = connect(dsn, application_name=application_name)
        try:
            return 0, read(conn)
        finally:
            conn.close()
    except psycopg2.Error as err:
        return database_error(command, err), None
