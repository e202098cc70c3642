"""A study in a SQL database (:class:`~optuna.storages.RDBStorage`): SQLite, or a server shared by machines.

Optuna's defaults are not enough for workers on a real database server; what it needs beyond them was found
by running workers against a real PostgreSQL and is set up in :func:`open_rdb_storage` and
:func:`sqlalchemy_url`. Heartbeats on a database use the server's clock (``now()``), so the workers' clocks
need not agree.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage

from pflnas.config.redact import redact_url
from pflnas.errors import ConfigError

CONNECT_TIMEOUT_S = 30  # libpq's default is to wait for the network as long as the OS does (minutes)
SCHEMA_LOCK_TIMEOUT = "120s"  # creating the tables takes well under a second
SCHEMA_LOCK_KEY = 0x70666C6E  # "pfln": the advisory lock id that serialises table creation


def sqlalchemy_url(url: str) -> str:
    """``url`` as SQLAlchemy should read it: a PostgreSQL URL without a driver gets psycopg 3 when it is
    installed (SQLAlchemy 2.0 would look for psycopg2), ``postgres://`` becomes ``postgresql://``.

    ``postgresql://`` means psycopg2 to SQLAlchemy 2.0 and psycopg 3 to 2.1; pflnas[postgres] installs
    psycopg 3, so a URL without a driver uses it when it is there (``postgres://``, libpq's alias, too)."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgres", "postgresql"):
        driver = "+psycopg" if importlib.util.find_spec("psycopg") is not None else ""
        return f"postgresql{driver}://{rest}"
    return url


def open_rdb_storage(url: str, **kwargs: Any) -> RDBStorage:
    """An :class:`~optuna.storages.RDBStorage` for the SQLAlchemy ``url``, set up for a shared server (see
    below); ``kwargs`` go to it (heartbeat settings). Any failure is one ConfigError line.

    - Workers that start together on a fresh database all create Optuna's tables at once, and PostgreSQL
      fails all but one (``duplicate key value violates unique constraint "pg_type_typname_nsp_index"``).
      They take turns here, under a session-level advisory lock that the server releases if a worker dies
      holding it.
    - A trial can run for hours while the worker's pooled connections sit idle; a firewall or a server
      restart drops them. Connections are checked before use (``pool_pre_ping``) and opened with a
      timeout, so a worker reconnects or fails with a message instead of hanging."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    target = sqlalchemy_url(url)
    try:
        parsed = make_url(target)
        backend = parsed.get_backend_name()
        engine_kwargs: dict[str, Any] = {}
        if backend != "sqlite":
            engine_kwargs["pool_pre_ping"] = True
        if backend == "postgresql" and "connect_timeout" not in parsed.query:
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        with _schema_lock(target, backend, engine_kwargs):
            return RDBStorage(target, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError:
        raise ConfigError(_no_driver(url)) from None
    except (ValueError, SQLAlchemyError, StorageInternalError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot open trials.storage {redact_url(url)} ({_scrub(reason, target)})"
        ) from None


@contextlib.contextmanager
def _schema_lock(url: str, backend: str, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """On PostgreSQL, hold an advisory lock while Optuna creates or checks its tables (workers that start
    together would otherwise race on CREATE TABLE); elsewhere nothing. Closing the connection frees it."""
    if backend != "postgresql":
        yield
        return
    import sqlalchemy

    connect_args = engine_kwargs.get("connect_args", {})
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"SET lock_timeout = '{SCHEMA_LOCK_TIMEOUT}'"))
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            yield
    finally:
        engine.dispose()


def _no_driver(url: str) -> str:
    scheme = url.partition("://")[0]
    if scheme.startswith("postgres"):
        return (
            f"cannot open trials.storage {redact_url(url)}: no PostgreSQL driver is installed; "
            "pip install 'pflnas[postgres]' (psycopg 3)"
        )
    return (
        f"cannot open trials.storage {redact_url(url)}: the database driver for {scheme!r} is not installed"
    )


def _scrub(text: str, url: str) -> str:
    """``text`` (a driver's message) without the URL's password, should the driver have quoted it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    with contextlib.suppress(ArgumentError, ValueError):
        password = make_url(url).password
        if password:
            text = text.replace(str(password), "***")
    return redact_url(text)
