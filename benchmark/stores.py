"""Opening the shared stores (Optuna's storage, MLflow's tracking store) safely.

- `schema_lock(url)`: several processes starting at once on an empty database would each
  create the schema and one would crash (PostgreSQL: a UniqueViolation on `pg_type`).
  PostgreSQL gets a session advisory lock, SQLite an exclusive `flock` on a file beside
  the database; the first process creates the tables, the others wait and find them.
- `check_tracking_store(uri)`: a wrong password or an unreachable database or server is
  one UserError within seconds, where MLflow would retry for minutes and then print a
  traceback.

Passwords never reach a message: URLs are shown through `mask_url`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from pathlib import Path
from typing import Iterator

from benchmark.config import mask_url
from benchmark.errors import UserError

CONNECT_TIMEOUT_S = 10


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (drivers put the cause there)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_database(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres", "mysql", "mssql", "sqlite")


def _engine(url: str):
    import sqlalchemy

    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgres") else {}
    return sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)


@contextlib.contextmanager
def schema_lock(url: str, flag: str) -> Iterator[None]:
    """Hold a lock that serialises schema creation on the database at `url`."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if not url.startswith("postgres"):
        yield
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(b"genebench-schema").digest()[:4], "big")
    try:
        connection = _engine(url).connect()
    except ModuleNotFoundError as exc:
        raise UserError(f"{flag}: {mask_url(url)} needs the PostgreSQL driver ({exc.name}): "
                        f"pip install -e \".[postgres]\"") from None
    except Exception as exc:  # wrong password, unknown host, server down
        raise UserError(f"{flag}: cannot connect to {mask_url(url)}: {reason(exc)}") from None
    with connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


def check_tracking_store(uri: str, flag: str) -> None:
    """Fail fast, in one line, when the MLflow tracking store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S)
        except requests.RequestException as exc:
            raise UserError(f"{flag}: cannot reach the MLflow server {mask_url(uri)}: "
                            f"{type(exc).__name__}") from None
        if response.status_code != 200:
            raise UserError(f"{flag}: the MLflow server {mask_url(uri)} answered /health with "
                            f"HTTP {response.status_code}")
    elif is_database(uri) and not uri.startswith("sqlite"):
        try:
            with _engine(uri).connect():
                pass
        except ModuleNotFoundError as exc:
            raise UserError(f"{flag}: {mask_url(uri)} needs its database driver ({exc.name}); for "
                            f"PostgreSQL: pip install -e \".[postgres]\"") from None
        except Exception as exc:
            raise UserError(f"{flag}: cannot connect to {mask_url(uri)}: {reason(exc)}") from None
