"""The registry: immutable adapter versions, compositions, pointers, evaluations, audit log.

Every write is: files staged in the workspace's tmp/ then renamed into place, then one SQLite
transaction (BEGIN IMMEDIATE) that inserts the rows *and* their audit entry, then the JSONL
mirror catches up. A process killed anywhere leaves the old or the new state: a staged or
renamed-but-unregistered folder is an orphan that nothing refers to (reused or cleaned later).
Each audit entry carries the sha256 of the rows it wrote, so `verify` can tell an edited row.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from forgetctl.errors import IncompatibleError, InputError, IntegrityError, NotFoundError
from forgetctl.registry import audit as audit_log_mod
from forgetctl.registry import commitments, db, objects
from forgetctl.registry.entities import (
    AdapterVersion,
    AuditEntry,
    BaseModelInfo,
    Composition,
    Evaluation,
    PointerMove,
)
from forgetctl.registry.fingerprint import short
from forgetctl.registry.objects import (  # noqa: F401  (re-exported: the store's file names)
    ADAPTER_FILES,
    MANIFEST,
    OPTIONAL_FILES,
    SECRET_BYTES,
    SIDECAR,
    STALE_SECONDS,
    sha256_file,
)
from forgetctl.registry.workspace import (
    Workspace,
    resolve_home,
    validate_name,
    validate_pointer_name,
)

REASONS = ("gdpr", "copyright", "toxicity", "other")
ORPHAN_SWEEP_EVERY = 50  # registrations between sweeps of never-committed object folders
_HEX = re.compile(r"[0-9a-f]{6,64}")
_NUMBER = re.compile(r"[vV]?(\d+)")
_COMP_NUMBER = re.compile(r"[cC]?(\d+)")
_ACTION = re.compile(r"[a-z][a-z0-9_.-]{0,39}")
_FP = re.compile(r"sha256:[0-9a-f]{64}")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_actor() -> str:
    actor = os.environ.get("FORGETCTL_ACTOR")
    if not actor:
        try:
            actor = getpass.getuser()
        except Exception:  # no user database entry (containers)
            actor = "unknown"
    return actor


def _actor(actor: str | None) -> str:
    return validate_name(actor or default_actor(), "actor")


def row_digest(table: str, row: dict) -> str:
    return hashlib.sha256(audit_log_mod.canonical_json({"table": table, **row})).hexdigest()


def composition_id(adapter_ids: list[str]) -> str:
    return hashlib.sha256(audit_log_mod.canonical_json({"composition": list(adapter_ids)})).hexdigest()


def secret_id(secret: bytes) -> str:
    """A public handle on the secret (detects a swapped key file) that reveals nothing of it."""
    return hashlib.sha256(b"forgetctl-secret-id\x00" + secret).hexdigest()[:16]


def _finite_or_none(obj):
    """JSON has no NaN/inf: a failed metric is stored as null rather than failing a registration."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


_LIGHT_COLUMNS = "id, number, request_id, reason, subject, method, base_fingerprint, parent_composition, created_at"


def _adapter_from_row(row) -> AdapterVersion:
    return AdapterVersion(
        id=row["id"], number=row["number"], request_id=row["request_id"], reason=row["reason"],
        subject=row["subject"], method=row["method"], base_fingerprint=row["base_fingerprint"],
        parent_composition=row["parent_composition"], created_at=row["created_at"], meta=json.loads(row["meta"]),
    )


def _composition_from_row(row) -> Composition:
    return Composition(
        id=row["id"], number=row["number"], adapters=tuple(json.loads(row["adapters"])),
        parent=row["parent"], note=row["note"], created_at=row["created_at"],
    )


def _move_from_row(row) -> PointerMove:
    return PointerMove(row["seq"], row["name"], row["from_id"], row["to_id"], row["action"], row["actor"], row["time"])


def _evaluation_from_row(row) -> Evaluation:
    return Evaluation(
        row["seq"], row["composition_id"], row["label"], json.loads(row["metrics"]), row["actor"], row["created_at"]
    )


class Registry:
    """Open with Registry.open(home) or create with Registry.init(...)."""

    def __init__(self, workspace: Workspace, conn):
        self.ws = workspace
        self.home: Path = workspace.root
        self._conn = conn
        self._base: BaseModelInfo | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def init(cls, home, base_spec: str, base_path: Path, fingerprint: str, actor=None) -> Registry:
        """Create a workspace bound to one base. Same base again: no-op; another base: refused."""
        if not isinstance(fingerprint, str) or not _FP.fullmatch(fingerprint):
            raise InputError(f"fingerprint must look like sha256:<64 hex>, got {str(fingerprint)[:40]!r}")
        if not isinstance(base_spec, str) or not base_spec.strip():
            raise InputError("base spec must be a non-empty string")
        ws = Workspace(resolve_home(home))
        if ws.root.exists() and not ws.root.is_dir():
            raise InputError(f"workspace path {ws.root} is a file")
        for folder in (ws.root, ws.adapters_dir, ws.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        objects.write_secret(ws.secret_file)
        reg = cls(ws, db.connect(ws.db, create=True))
        try:
            reg._init_rows(base_spec, base_path, fingerprint, _actor(actor))
        except BaseException:
            reg.close()
            raise
        return reg

    def _refuse_lost_database(self) -> None:
        """An empty index next to a non-empty audit mirror means the database was lost or swapped:
        never start a fresh history over the old evidence."""
        mirror = self.ws.audit_mirror
        if mirror.is_file() and mirror.stat().st_size > 0:
            raise IntegrityError(
                f"registry database {self.ws.db} is empty but {mirror.name} records past events: "
                "the database was lost or replaced; restore it from a backup"
            )

    def _init_rows(self, base_spec: str, base_path: Path, fingerprint: str, who: str) -> None:
        reg, ws = self, self.ws
        with reg._write() as conn:
            row = conn.execute("SELECT * FROM base").fetchone()
            if row is None:
                reg._refuse_lost_database()
            if row is not None:
                if row["fingerprint"] != fingerprint:
                    raise IncompatibleError(
                        f"workspace {ws.root} already unlearns against {row['spec']} ({short(row['fingerprint'])}); "
                        f"refusing {base_spec} ({short(fingerprint)}): use another --home"
                    )
                return
            at = now()
            base_row = {
                "id": 1, "spec": base_spec, "path": str(base_path), "fingerprint": fingerprint,
                "secret_id": secret_id(reg.secret()), "created_at": at,
            }
            reg._insert(conn, "base", base_row)
            c0 = {"number": 0, "id": composition_id([]), "adapters": "[]", "parent": None,
                  "note": "pristine base", "created_at": at}
            reg._insert(conn, "compositions", c0)
            move = {"seq": 1, "name": "HEAD", "from_id": None, "to_id": c0["id"], "action": "init",
                    "actor": who, "time": at}
            reg._insert(conn, "pointer_moves", move)
            audit_log_mod.append(
                conn, "init", {"base_spec": base_spec, "fingerprint": fingerprint},
                {"composition": c0["id"], "secret_id": base_row["secret_id"],
                 "rows": [reg._ref("base", base_row), reg._ref("compositions", c0), reg._ref("pointer_moves", move)]},
                who, at,
            )

    @classmethod
    def open(cls, home=None) -> Registry:
        ws = Workspace(resolve_home(home))
        if not ws.exists():
            raise NotFoundError(f"no forgetctl workspace at {ws.root}: run `forgetctl init --base MODEL` or pass --home")
        reg = cls(ws, db.connect(ws.db))
        with db.translated(ws.db):
            if reg._conn.execute("SELECT 1 FROM base").fetchone() is None:
                reg.close()
                reg._refuse_lost_database()
                raise NotFoundError(f"workspace {ws.root} was never initialised: run `forgetctl init --base MODEL`")
        try:
            reg._sync()  # an interrupted write may have left the mirror behind
        except PermissionError:
            pass  # a read-only workspace (an auditor's copy): reading and verifying still work
        return reg

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _write(self):
        with db.translated(self.ws.db), db.transaction(self._conn) as conn:
            yield conn
        self._sync()

    def _sync(self) -> None:
        with db.translated(self.ws.db):
            audit_log_mod.sync_mirror(self._conn, self.ws.audit_mirror)

    def _query(self, sql: str, args=()) -> list:
        with db.translated(self.ws.db):
            return self._conn.execute(sql, args).fetchall()

    def _insert(self, conn, table: str, row: dict) -> None:
        cols = ", ".join(row)
        conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def _ref(self, table: str, row: dict) -> list:
        key = row["id"] if table == "base" else row.get("number", row.get("seq"))
        return [table, key, row_digest(table, row)]

    # ---- base and secret -------------------------------------------------------------------

    @property
    def base(self) -> BaseModelInfo:
        if self._base is None:
            row = self._query("SELECT * FROM base")[0]
            self._base = BaseModelInfo(row["spec"], row["path"], row["fingerprint"], row["created_at"])
        return self._base

    def secret(self) -> bytes:
        try:
            data = self.ws.secret_file.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"workspace secret {self.ws.secret_file} is missing: commitments cannot be checked") from None
        if len(data) != SECRET_BYTES:
            raise IntegrityError(f"workspace secret {self.ws.secret_file} is damaged ({len(data)} bytes)")
        return data

    # ---- adapters --------------------------------------------------------------------------

    def register_adapter(self, src_dir: Path, meta: dict, commitment=None, actor=None) -> AdapterVersion:
        """Store a PEFT adapter folder immutably with its sidecar; returns the existing version if
        the same content was registered before."""
        src = Path(src_dir)
        who = _actor(actor)
        meta = self._checked_meta(meta, commitment)
        files = objects.adapter_sources(src)
        objects.clean_stale(self.ws)
        for folder in (self.ws.tmp_dir, self.ws.adapters_dir):
            folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="adapter-", dir=self.ws.tmp_dir))
        try:
            adapter_id, manifest = objects.stage(staging, files, meta)
            self._publish(staging, adapter_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM adapters WHERE id = ?", (adapter_id,)).fetchone()
            if row is not None:
                return _adapter_from_row(row)
            number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM adapters").fetchone()[0]
            row = {
                "number": number, "id": adapter_id, "request_id": meta["request_id"], "reason": meta["reason"],
                "subject": meta.get("subject", ""), "method": meta["method"],
                "base_fingerprint": meta["base_fingerprint"], "parent_composition": meta.get("parent_composition"),
                "created_at": now(), "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False),
                "commitment_root": commitment.root if commitment else None,
                "commitment_count": commitment.count if commitment else None,
                "commitment_leaves": json.dumps(list(commitment.leaves)) if commitment else None,
            }
            self._insert(conn, "adapters", row)
            audit_log_mod.append(
                conn, "register",
                {"request_id": meta["request_id"], "reason": meta["reason"], "method": meta["method"],
                 "base_fingerprint": meta["base_fingerprint"], "parent_composition": meta.get("parent_composition")},
                {"adapter_id": adapter_id, "version": f"v{number}", "manifest": manifest,
                 "commitment_root": row["commitment_root"], "rows": [self._ref("adapters", row)]},
                who, row["created_at"],
            )
        if number % ORPHAN_SWEEP_EVERY == 0:
            self.collect_orphans()
        return _adapter_from_row(row)

    def _checked_meta(self, meta, commitment) -> dict:
        if not isinstance(meta, dict):
            raise InputError("adapter meta must be a dict")
        meta = _finite_or_none(dict(meta))
        for key in ("request_id", "reason", "method", "base_fingerprint"):
            if not meta.get(key):
                raise InputError(f"adapter meta lacks '{key}'")
        if meta["base_fingerprint"] != self.base.fingerprint:
            raise IncompatibleError(
                f"adapter was trained against base {short(meta['base_fingerprint'])}, "
                f"this workspace's base is {short(self.base.fingerprint)}"
            )
        validate_name(meta["request_id"], "request id")
        validate_name(meta["method"], "method", max_len=64)
        if meta.get("subject"):
            validate_name(meta["subject"], "subject label")
        if meta["reason"] not in REASONS:
            raise InputError(f"reason must be one of {', '.join(REASONS)}, got {str(meta['reason'])[:40]!r}")
        if meta.get("parent_composition"):
            meta["parent_composition"] = self.composition(str(meta["parent_composition"])).id
        if commitment is not None:
            if not isinstance(commitment, commitments.Commitment):
                raise InputError("commitment must be a forgetctl.registry.Commitment")
            if not commitment.leaves or commitments.merkle_root(commitment.leaves) != commitment.root \
                    or commitment.count != len(commitment.leaves):
                raise InputError("commitment root does not match its leaves")
            stated = meta.get("commitment")
            if stated and (stated.get("root") != commitment.root or stated.get("count") != commitment.count):
                raise InputError("meta['commitment'] disagrees with the commitment passed in")
            meta["commitment"] = {"root": commitment.root, "count": commitment.count}
        try:
            audit_log_mod.canonical_json(meta)
        except (TypeError, ValueError) as exc:
            raise InputError(f"adapter meta must be plain JSON: {exc}") from None
        return meta

    def _publish(self, staging: Path, adapter_id: str) -> None:
        if (self.ws.adapters_dir / adapter_id).exists() and self._query("SELECT 1 FROM adapters WHERE id = ?", (adapter_id,)):
            problems = objects.folder_problems(self.ws.adapters_dir / adapter_id, adapter_id)
            if problems:
                raise IntegrityError(f"stored copy of adapter {adapter_id[:12]} is damaged ({problems[0]}): "
                                     "run `forgetctl audit verify`")
        objects.publish(self.ws, staging, adapter_id)

    def collect_orphans(self, min_age_s: float = STALE_SECONDS) -> list[str]:
        """Remove object folders whose registration never committed (a writer killed between
        rename and commit). Harmless meanwhile, so this runs only every few registrations."""
        registered = {r["id"] for r in self._query("SELECT id FROM adapters")}
        return objects.collect_orphans(self.ws, registered, min_age_s)

    def adapter(self, ref: str) -> AdapterVersion:
        """"3", "v3", a full or prefix content hash (6+ hex), or a request id (its latest version)."""
        ref = str(ref).strip()
        if m := _NUMBER.fullmatch(ref):
            rows = self._query("SELECT * FROM adapters WHERE number = ?", (int(m.group(1)),))
        else:
            rows = []
            if _HEX.fullmatch(ref.lower()):
                rows = self._query("SELECT * FROM adapters WHERE id LIKE ? ORDER BY number", (ref.lower() + "%",))
                if len(rows) > 1:
                    raise InputError(f"adapter ref {ref!r} is ambiguous: {', '.join('v%d' % r['number'] for r in rows)}")
            if not rows:
                rows = self._query("SELECT * FROM adapters WHERE request_id = ? ORDER BY number DESC LIMIT 1", (ref,))
        if not rows:
            raise NotFoundError(f"unknown adapter version {ref[:80]!r} (see `forgetctl list`)")
        return _adapter_from_row(rows[0])

    def adapters(self, with_meta: bool = True) -> list[AdapterVersion]:
        """Every version, by number. with_meta=False skips the sidecar and commitment columns (listing
        10,000 versions then reads a few hundred kB instead of every sidecar); `meta` is then {}."""
        if with_meta:
            return [_adapter_from_row(r) for r in self._query("SELECT * FROM adapters ORDER BY number")]
        rows = self._query(f"SELECT {_LIGHT_COLUMNS}, '{{}}' AS meta FROM adapters ORDER BY number")
        return [_adapter_from_row(r) for r in rows]

    def adapter_dir(self, version: AdapterVersion) -> Path:
        return self.ws.adapters_dir / version.id

    def commitment(self, version: AdapterVersion) -> commitments.Commitment | None:
        row = self._query("SELECT commitment_root, commitment_count, commitment_leaves FROM adapters WHERE id = ?",
                          (version.id,))[0]
        if row["commitment_root"] is None:
            return None
        return commitments.Commitment(row["commitment_root"], tuple(json.loads(row["commitment_leaves"])),
                                      row["commitment_count"])

    def prove(self, request_ref: str, records) -> dict:
        """Per record handed in again: was it covered by that request's stored commitment?"""
        version = self.adapter(request_ref)
        commitment = self.commitment(version)
        if commitment is None:
            raise NotFoundError(f"{version.label} ({version.request_id}) has no stored commitment")
        proofs = commitments.prove(version.request_id, [r.canonical_bytes() for r in records], self.secret(), commitment)
        return {
            "request_id": version.request_id, "version": version.label, "adapter_id": version.id,
            "root": commitment.root, "committed": commitment.count,
            "covered": sum(p.covered for p in proofs), "checked": len(proofs),
            "records": [p.to_dict() for p in proofs],
        }

    # ---- compositions and pointers ---------------------------------------------------------

    def composition(self, ref: str) -> Composition:
        """"HEAD", an alias, "c3", "3", or a hash prefix (6+ hex)."""
        ref = str(ref).strip()
        target = self.pointers().get(ref)
        if target is not None:
            rows = self._query("SELECT * FROM compositions WHERE id = ?", (target,))
        elif m := _COMP_NUMBER.fullmatch(ref):
            rows = self._query("SELECT * FROM compositions WHERE number = ?", (int(m.group(1)),))
        elif _HEX.fullmatch(ref.lower()):
            rows = self._query("SELECT * FROM compositions WHERE id LIKE ? ORDER BY number", (ref.lower() + "%",))
            if len(rows) > 1:
                raise InputError(f"composition ref {ref!r} is ambiguous: {', '.join('c%d' % r['number'] for r in rows)}")
        else:
            rows = []
        if not rows:
            raise NotFoundError(f"unknown composition or pointer {ref[:80]!r} (see `forgetctl history`)")
        return _composition_from_row(rows[0])

    def compositions(self) -> list[Composition]:
        return [_composition_from_row(r) for r in self._query("SELECT * FROM compositions ORDER BY number")]

    def head(self) -> Composition:
        return self.composition("HEAD")

    def compose(self, adapter_ids: list[str], parent: str | None, note: str, actor=None) -> Composition:
        """The model state 'base + these adapters in this order'; the same list returns the existing one."""
        who = _actor(actor)
        ids = [self.adapter(a).id for a in adapter_ids]
        if len(set(ids)) != len(ids):
            raise InputError("a composition cannot apply the same adapter twice")
        parent_id = self.composition(parent).id if parent else None
        note = str(note or "")
        if len(note) > 500 or any(ord(c) < 32 and c not in "\t" for c in note):
            raise InputError("composition note must be one line of at most 500 characters")
        cid = composition_id(ids)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM compositions WHERE id = ?", (cid,)).fetchone()
            if row is not None:
                return _composition_from_row(row)
            number = conn.execute("SELECT MAX(number) + 1 FROM compositions").fetchone()[0]
            row = {"number": number, "id": cid, "adapters": json.dumps(ids), "parent": parent_id,
                   "note": note, "created_at": now()}
            self._insert(conn, "compositions", row)
            audit_log_mod.append(
                conn, "compose", {"adapters": ids, "parent": parent_id},
                {"composition": cid, "label": f"c{number}", "rows": [self._ref("compositions", row)]},
                who, row["created_at"],
            )
        return _composition_from_row(row)

    def pointers(self) -> dict[str, str]:
        rows = self._query(
            "SELECT name, to_id FROM pointer_moves AS p WHERE seq = (SELECT MAX(seq) FROM pointer_moves WHERE name = p.name)"
        )
        return {r["name"]: r["to_id"] for r in rows}

    def pointer_history(self, name: str | None = None) -> list[PointerMove]:
        if name is None:
            rows = self._query("SELECT * FROM pointer_moves ORDER BY seq")
        else:
            rows = self._query("SELECT * FROM pointer_moves WHERE name = ? ORDER BY seq", (name,))
        return [_move_from_row(r) for r in rows]

    def move_pointer(self, name: str, composition_id: str, actor=None, action="move") -> None:
        """Point `name` at a composition (any ref); the move is kept in history and audited."""
        if name != "HEAD":
            validate_pointer_name(name)
        if not isinstance(action, str) or not _ACTION.fullmatch(action):
            raise InputError(f"action {str(action)[:40]!r} must be a short lowercase word")
        who = _actor(actor)
        target = self.composition(composition_id)
        with self._write() as conn:
            current = conn.execute(
                "SELECT to_id FROM pointer_moves WHERE name = ? ORDER BY seq DESC LIMIT 1", (name,)
            ).fetchone()
            from_id = current["to_id"] if current else None
            if from_id == target.id:
                return
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM pointer_moves").fetchone()[0]
            move = {"seq": seq, "name": name, "from_id": from_id, "to_id": target.id, "action": action,
                    "actor": who, "time": now()}
            self._insert(conn, "pointer_moves", move)
            audit_log_mod.append(
                conn, action, {"pointer": name, "from": from_id},
                {"to": target.id, "label": target.label, "rows": [self._ref("pointer_moves", move)]},
                who, move["time"],
            )

    def set_alias(self, name: str, target: str, actor=None) -> Composition:
        """Move a named pointer such as `production`. HEAD moves only through train and rollback."""
        if name.upper() == "HEAD":
            raise InputError("HEAD cannot be set with alias: use `forgetctl rollback` (or train) to move it")
        self.move_pointer(name, target, actor=actor, action="alias")
        return self.composition(name)

    # ---- evaluations and audit -------------------------------------------------------------

    def add_evaluation(self, composition_id: str, metrics: dict, label: str, actor=None) -> Evaluation:
        who = _actor(actor)
        comp = self.composition(composition_id)
        validate_name(label, "evaluation label", max_len=64)
        if not isinstance(metrics, dict) or not metrics:
            raise InputError("metrics must be a non-empty dict of name -> number")
        clean = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or not 0 < len(key) <= 128 or not key.isprintable():
                raise InputError(f"metric name {ascii(key)[:60]} must be 1-128 printable characters")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"metric {key!r} must be a finite number, got {str(value)[:40]!r}")
            clean[key] = float(value)
        with self._write() as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM evaluations").fetchone()[0]
            row = {"seq": seq, "composition_id": comp.id, "label": label,
                   "metrics": json.dumps(clean, sort_keys=True), "actor": who, "created_at": now()}
            self._insert(conn, "evaluations", row)
            audit_log_mod.append(
                conn, "evaluate", {"composition": comp.id, "label": label},
                {"evaluation": seq, "rows": [self._ref("evaluations", row)]}, who, row["created_at"],
            )
        return _evaluation_from_row(row)

    def evaluations(self, composition_id: str | None = None) -> list[Evaluation]:
        if composition_id is None:
            rows = self._query("SELECT * FROM evaluations ORDER BY seq")
        else:
            cid = self.composition(composition_id).id
            rows = self._query("SELECT * FROM evaluations WHERE composition_id = ? ORDER BY seq", (cid,))
        return [_evaluation_from_row(r) for r in rows]

    def audit(self, action: str, inputs: dict, outputs: dict, actor=None) -> AuditEntry:
        """Append an event (train, export, push, pull...). inputs/outputs: ids, hashes, numbers only."""
        if not isinstance(action, str) or not _ACTION.fullmatch(action):
            raise InputError(f"audit action {str(action)[:40]!r} must be a short lowercase word")
        who = _actor(actor)
        with self._write() as conn:
            return audit_log_mod.append(conn, action, inputs, outputs, who, now())

    def audit_log(self) -> list[AuditEntry]:
        with db.translated(self.ws.db):
            return audit_log_mod.entries(self._conn)

    # ---- verification ----------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Everything that no longer matches its hash; empty list = all good. Read-only."""
        from forgetctl.registry.verify import verify_registry

        return verify_registry(self)

    def record_verification(self, problems: list[str], actor=None) -> AuditEntry:
        """Log that a verification ran (opt-in: `forgetctl audit verify --record`)."""
        log = self.audit_log()
        return self.audit("verify", {"head": log[-1].hash if log else None}, {"problems": len(problems)}, actor)
