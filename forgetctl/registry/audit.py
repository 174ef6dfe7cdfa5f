"""Hash-chained, append-only audit log: rows in SQLite, mirrored line by line to audit.jsonl.

Write order: the entry is committed to SQLite (inside the caller's transaction), then the
mirror catches up with every committed entry it lacks, under an exclusive file lock. A crash
between the two leaves the mirror behind at its tail, which the next open repairs; the mirror is
thus never legitimately *ahead* of the database: an entry found only in the mirror means one was
removed from the database.

The chain is unkeyed so anyone can verify it; the flip side is that someone able to rewrite both
files *and* recompute every later hash can forge a consistent history, and entries appended at
the tail of the database are mirrored on the next open. Anchor the head hash elsewhere (it is the
last `hash` of `forgetctl log --json`, and `audit verify --record` logs it) to rule that out.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from pathlib import Path

from forgetctl.errors import InputError
from forgetctl.registry.entities import AuditEntry

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a single writer is assumed there
    fcntl = None

GENESIS = "0" * 64
MAX_VALUE_CHARS = 256
_FIELDS = ("seq", "time", "actor", "action", "inputs", "outputs", "prev_hash", "hash")


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(seq: int, time: str, actor: str, action: str, inputs: dict, outputs: dict, prev_hash: str) -> str:
    body = {
        "seq": seq, "time": time, "actor": actor, "action": action,
        "inputs": inputs, "outputs": outputs, "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def check_payload(payload, what: str, depth: int = 0) -> None:
    """Audit inputs/outputs hold ids, hashes, numbers and short labels: never data.
    Long or multi-line strings are refused so record text cannot slip in by accident."""
    if depth == 0 and not isinstance(payload, dict):
        raise InputError(f"audit {what} must be a dict")
    if depth > 4:
        raise InputError(f"audit {what} is nested too deeply")
    if isinstance(payload, dict):
        for key, value in payload.items():
            if not isinstance(key, str) or not key or len(key) > 64:
                raise InputError(f"audit {what}: keys must be short strings")
            check_payload(value, what, depth + 1)
    elif isinstance(payload, (list, tuple)):
        for value in payload:
            check_payload(value, what, depth + 1)
    elif isinstance(payload, str):
        if len(payload) > MAX_VALUE_CHARS or "\n" in payload or "\r" in payload:
            raise InputError(f"audit {what}: values must be ids, hashes or short labels, not text")
    elif isinstance(payload, float):
        if not math.isfinite(payload):
            raise InputError(f"audit {what}: numbers must be finite")
    elif payload is not None and not isinstance(payload, (bool, int)):
        raise InputError(f"audit {what}: unsupported value type {type(payload).__name__}")


def append(conn: sqlite3.Connection, action: str, inputs: dict, outputs: dict, actor: str, time: str) -> AuditEntry:
    """Append one entry. Must run inside the caller's write transaction (BEGIN IMMEDIATE)."""
    check_payload(inputs, "inputs")
    check_payload(outputs, "outputs")
    inputs, outputs = json.loads(canonical_json(inputs)), json.loads(canonical_json(outputs))  # tuples -> lists
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS)
    digest = entry_hash(seq, time, actor, action, inputs, outputs, prev)
    conn.execute(
        "INSERT INTO audit (seq, time, actor, action, inputs, outputs, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
        (seq, time, actor, action, canonical_json(inputs).decode(), canonical_json(outputs).decode(), prev, digest),
    )
    return AuditEntry(seq, time, actor, action, inputs, outputs, prev, digest)


def entry_from_row(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        row["seq"], row["time"], row["actor"], row["action"],
        json.loads(row["inputs"]), json.loads(row["outputs"]), row["prev_hash"], row["hash"],
    )


def entries(conn: sqlite3.Connection) -> list[AuditEntry]:
    return [entry_from_row(r) for r in conn.execute("SELECT * FROM audit ORDER BY seq")]


def mirror_line(entry: AuditEntry) -> bytes:
    return canonical_json(entry.to_dict()) + b"\n"


def _tail(f) -> tuple[int, int, bytes | None]:
    """(file size, end of the last complete line, that line or None), reading backwards."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    pos, buf = size, b""
    while pos > 0 and buf.count(b"\n") < 2:
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
    last_nl = buf.rfind(b"\n")
    if last_nl < 0:
        return size, 0, None
    end = pos + last_nl + 1
    start = buf.rfind(b"\n", 0, last_nl) + 1
    return size, end, buf[start:last_nl]


def sync_mirror(conn: sqlite3.Connection, path: Path) -> int:
    """Append to the mirror every committed entry it lacks; returns how many were appended.

    A torn last line (crash mid-write) is cut off first. If the mirror's last line does not match
    the database, nothing is written: that is for `verify` to report, not for us to paper over."""
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        size, end, last = _tail(f)
        last_seq = 0
        if last is not None:
            try:
                parsed = json.loads(last)
                last_seq, last_hash = int(parsed["seq"]), parsed["hash"]
            except (ValueError, KeyError, TypeError):
                return 0
            row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (last_seq,)).fetchone()
            if row is None or row["hash"] != last_hash:
                return 0
        if end < size:
            f.truncate(end)
        rows = conn.execute("SELECT * FROM audit WHERE seq > ? ORDER BY seq", (last_seq,)).fetchall()
        if rows:
            f.seek(0, os.SEEK_END)
            f.write(b"".join(mirror_line(entry_from_row(r)) for r in rows))
            f.flush()
            os.fsync(f.fileno())
        return len(rows)


def read_mirror(path: Path) -> tuple[list[AuditEntry], list[str]]:
    """Parse audit.jsonl; malformed lines become problems naming the line."""
    found, problems = [], []
    if not path.is_file():
        return found, [f"{path.name} is missing"]
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                obj = json.loads(raw)
                if set(obj) != set(_FIELDS):
                    raise ValueError
                found.append(AuditEntry(**{k: obj[k] for k in _FIELDS}))
            except (ValueError, TypeError):
                problems.append(f"{path.name} line {lineno}: not a valid audit entry")
    return found, problems


def verify_chain(chain: list[AuditEntry], where: str) -> list[str]:
    """Check seq continuity, prev_hash links and each entry's own hash; name the seq."""
    problems, expected, prev = [], 1, GENESIS
    for e in chain:
        if not isinstance(e.seq, int):
            problems.append(f"{where}: entry with non-integer seq {e.seq!r}")
            continue
        if e.seq > expected:
            gap = f"seq {expected}" if e.seq == expected + 1 else f"seq {expected}..{e.seq - 1}"
            problems.append(f"{where}: {gap} missing (entry removed)")
        elif e.seq < expected:
            problems.append(f"{where}: seq {e.seq} out of order or duplicated (after seq {expected - 1})")
        if e.prev_hash != prev:
            problems.append(f"{where}: seq {e.seq} does not link to the entry before it (inserted, removed or reordered)")
        try:
            recomputed = entry_hash(e.seq, e.time, e.actor, e.action, e.inputs, e.outputs, e.prev_hash)
        except (TypeError, ValueError):
            recomputed = None
        if recomputed != e.hash:
            problems.append(f"{where}: seq {e.seq} content does not match its hash (edited)")
        prev, expected = e.hash, max(expected, e.seq + 1)
    return problems


def compare_mirror(db_chain: list[AuditEntry], mirror: list[AuditEntry], mirror_name: str) -> list[str]:
    """The database and its JSONL mirror must hold the same entries."""
    problems = []
    in_db = {e.seq: e for e in db_chain}
    in_mirror: dict = {}
    for e in mirror:
        in_mirror.setdefault(e.seq, e)
    for seq, e in in_db.items():
        other = in_mirror.get(seq)
        if other is None:
            problems.append(f"{mirror_name} lacks seq {seq} that the database has")
        elif other.to_dict() != e.to_dict():
            problems.append(f"seq {seq} differs between the database and {mirror_name}")
    for seq in in_mirror:
        if seq not in in_db:
            problems.append(f"database lacks seq {seq} that {mirror_name} has (removed from the database)")
    return problems
