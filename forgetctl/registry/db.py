"""SQLite index of a workspace: WAL, busy timeout, add-only migrations, one-line errors.

Tables are append-only: triggers refuse UPDATE and DELETE, so current state (pointers) is
derived from history. Anyone editing the file with another tool can drop the triggers, which is
why `verify` also checks every row against the hash-chained audit log.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from forgetctl.errors import ForgetctlError, IncompatibleError, IntegrityError

BUSY_TIMEOUT_MS = 60_000
APPEND_ONLY_TABLES = ("base", "adapters", "compositions", "pointer_moves", "evaluations", "audit")


def _append_only_triggers(table: str) -> str:
    return (
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;\n"
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;\n"
    )


# Add-only: never edit a shipped entry, append a new one. Index i brings the schema to version i+1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE base (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        spec TEXT NOT NULL, path TEXT NOT NULL, fingerprint TEXT NOT NULL,
        secret_id TEXT NOT NULL, created_at TEXT NOT NULL
    );
    CREATE TABLE adapters (
        number INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL, reason TEXT NOT NULL, subject TEXT NOT NULL, method TEXT NOT NULL,
        base_fingerprint TEXT NOT NULL, parent_composition TEXT,
        created_at TEXT NOT NULL, meta TEXT NOT NULL,
        commitment_root TEXT, commitment_count INTEGER, commitment_leaves TEXT
    );
    CREATE INDEX adapters_request ON adapters(request_id);
    CREATE TABLE compositions (
        number INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        adapters TEXT NOT NULL, parent TEXT, note TEXT NOT NULL, created_at TEXT NOT NULL
    );
    CREATE TABLE pointer_moves (
        seq INTEGER PRIMARY KEY,
        name TEXT NOT NULL, from_id TEXT, to_id TEXT NOT NULL,
        action TEXT NOT NULL, actor TEXT NOT NULL, time TEXT NOT NULL
    );
    CREATE INDEX pointer_moves_name ON pointer_moves(name, seq);
    CREATE TABLE evaluations (
        seq INTEGER PRIMARY KEY,
        composition_id TEXT NOT NULL, label TEXT NOT NULL, metrics TEXT NOT NULL,
        actor TEXT NOT NULL, created_at TEXT NOT NULL
    );
    CREATE INDEX evaluations_composition ON evaluations(composition_id, seq);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        inputs TEXT NOT NULL, outputs TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
    );
    """
    + "".join(_append_only_triggers(t) for t in APPEND_ONLY_TABLES),
]
SCHEMA_VERSION = len(MIGRATIONS)


def database_error(path: Path, exc: sqlite3.Error) -> ForgetctlError:
    """Map sqlite errors to one-line forgetctl errors."""
    text = " ".join(str(exc).split())
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return ForgetctlError(f"registry database {path} is busy (another forgetctl is writing): {text}")
    return IntegrityError(f"registry database {path} is unreadable or corrupted: {text}")


@contextlib.contextmanager
def translated(path: Path):
    try:
        yield
    except sqlite3.Error as exc:
        raise database_error(path, exc) from None


def connect(path: Path, create: bool = False) -> sqlite3.Connection:
    """Open (or create) the index and bring its schema up to date."""
    with translated(path):
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if create:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn, path)
        except BaseException:
            conn.close()
            raise
    return conn


def _current_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] or 0


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if _current_version(conn) == SCHEMA_VERSION:
        return
    with transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
        version = _current_version(conn)
        if version > SCHEMA_VERSION:
            raise IncompatibleError(
                f"workspace {path.parent} has schema {version}; this forgetctl knows up to {SCHEMA_VERSION}: upgrade"
            )
        for index in range(version, SCHEMA_VERSION):
            # executescript() would COMMIT midway: run the statements one by one inside this transaction
            for statement in _split(MIGRATIONS[index]):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, datetime('now'))", (index + 1,)
            )


def _split(script: str) -> list[str]:
    """Split a migration into statements (trigger bodies hold ';' so use sqlite's own completeness test)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection):
    """BEGIN IMMEDIATE: takes the write lock up front so concurrent writers serialise
    (distinct version numbers, one unbroken audit chain)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
