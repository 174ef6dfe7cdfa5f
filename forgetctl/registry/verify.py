"""`forgetctl audit verify`: everything stored must still match its hash.

Checks, each problem naming what is wrong: SQLite's own consistency; the audit chain in the
database and in audit.jsonl (removed, inserted, edited or reordered entries, by seq); that both
agree; that every row was logged as written (row digests in the audit entries); that every stored
adapter file matches its manifest and the manifest matches the adapter id; compositions match
their content address; the workspace secret is the one the workspace was created with.
Orphans (staging folders, folders whose registration never committed) are not corruption.
"""

from __future__ import annotations

import json
import stat

from forgetctl.registry import audit as audit_mod
from forgetctl.registry import commitments, db
from forgetctl.registry.objects import SIDECAR, folder_problems

_TABLE_KEYS = {"base": "id", "adapters": "number", "compositions": "number", "pointer_moves": "seq", "evaluations": "seq"}
_LABELS = {"base": "base", "adapters": "v", "compositions": "c", "pointer_moves": "pointer move ", "evaluations": "evaluation "}


def _row_problems(reg, conn, chain) -> list[str]:
    from forgetctl.registry.store import row_digest

    logged: dict[tuple, str] = {}
    for entry in chain:
        for ref in entry.outputs.get("rows", []) if isinstance(entry.outputs, dict) else []:
            if isinstance(ref, list) and len(ref) == 3:
                logged[(ref[0], ref[1])] = ref[2]
    problems = []
    for table, key in _TABLE_KEYS.items():
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY {key}"):
            name = f"{_LABELS[table]}{row[key]}" if table != "base" else "base"
            digest = logged.get((table, row[key]))
            if digest is None:
                problems.append(f"{table} row {name} has no audit entry (written outside forgetctl)")
            elif digest != row_digest(table, dict(row)):
                problems.append(f"{table} row {name} was edited after it was logged")
    return problems


def _adapter_problems(reg, conn) -> list[str]:
    problems = []
    for row in conn.execute("SELECT * FROM adapters ORDER BY number"):
        label = f"v{row['number']}"
        folder = reg.ws.adapters_dir / row["id"]
        found = folder_problems(folder, row["id"], label)
        problems += found
        if not found:
            sidecar = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
            columns = ("request_id", "reason", "subject", "method", "base_fingerprint", "parent_composition")
            if sidecar != json.loads(row["meta"]) or any(sidecar.get(c, "" if c == "subject" else None) != row[c]
                                                         for c in columns):
                problems.append(f"{label}: registry row disagrees with its {SIDECAR}")
        if row["commitment_root"] is not None:
            leaves = json.loads(row["commitment_leaves"])
            if not leaves or commitments.merkle_root(leaves) != row["commitment_root"]:
                problems.append(f"{label}: stored commitment leaves do not match the Merkle root")
    return problems


def _composition_problems(conn) -> list[str]:
    from forgetctl.registry.store import composition_id

    known = {r["id"] for r in conn.execute("SELECT id FROM adapters")}
    problems = []
    for row in conn.execute("SELECT * FROM compositions ORDER BY number"):
        ids = json.loads(row["adapters"])
        if composition_id(ids) != row["id"]:
            problems.append(f"c{row['number']}: adapter list does not match its content address")
        for missing in [i for i in ids if i not in known]:
            problems.append(f"c{row['number']}: refers to unknown adapter {missing[:12]}")
    return problems


def _secret_problems(reg, conn) -> list[str]:
    from forgetctl.registry.store import secret_id

    path = reg.ws.secret_file
    try:
        secret = reg.secret()
    except Exception as exc:  # IntegrityError with a one-line reason
        return [str(exc)]
    problems = []
    row = conn.execute("SELECT secret_id FROM base").fetchone()
    if row is not None and row["secret_id"] != secret_id(secret):
        problems.append(f"workspace secret {path.name} was replaced: old commitments can no longer be proven")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        problems.append(f"workspace secret {path.name} is readable by other users (chmod 600 it)")
    return problems


def verify_registry(reg) -> list[str]:
    conn = reg._conn
    with db.translated(reg.ws.db):
        checks = [r[0] for r in conn.execute("PRAGMA quick_check")]
        problems = [] if checks == ["ok"] else [f"sqlite: {c}" for c in checks[:5]]
        chain = audit_mod.entries(conn)
        problems += audit_mod.verify_chain(chain, "database audit log")
        mirror, parse_problems = audit_mod.read_mirror(reg.ws.audit_mirror)
        problems += parse_problems
        problems += audit_mod.verify_chain(mirror, reg.ws.audit_mirror.name)
        problems += audit_mod.compare_mirror(chain, mirror, reg.ws.audit_mirror.name)
        problems += _row_problems(reg, conn, chain)
        problems += _adapter_problems(reg, conn)
        problems += _composition_problems(conn)
        problems += _secret_problems(reg, conn)
    return problems
