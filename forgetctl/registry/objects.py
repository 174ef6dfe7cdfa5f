"""The content-addressed file store: objects/adapters/<id>/ where id = sha256 of manifest.json.

A version is staged in the workspace's tmp/ (copied, sidecar and manifest written, fsynced,
made read-only) and renamed into place in one step; the database row comes after. A folder
with no row is an orphan: nothing refers to it, a retry of the same content reuses it, and it is
swept when old.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from forgetctl.digests import sha256_file
from forgetctl.errors import InputError, NotFoundError
from forgetctl.registry.audit import canonical_json
from forgetctl.registry.workspace import Workspace

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
OPTIONAL_FILES = ("trajectory.json",)
SIDECAR, MANIFEST = "forgetctl.json", "manifest.json"
SECRET_BYTES = 32
STALE_SECONDS = 3600  # staged folders older than this belong to dead processes


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def write_secret(path: Path) -> None:
    """Create the 0600 secret once; never overwrite one (commitments depend on it)."""
    if path.exists():
        return
    tmp = path.with_name(f".secret-{os.getpid()}-{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(SECRET_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and refuses to replace a secret another process just made
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def adapter_sources(src: Path) -> list[Path]:
    """The files of a PEFT adapter folder to store; refuses what is not one."""
    if not src.is_dir():
        raise NotFoundError(f"adapter folder not found: {src}")
    missing = [n for n in ADAPTER_FILES if not (src / n).is_file()]
    if missing:
        raise InputError(f"{src} is not a PEFT adapter folder: missing {', '.join(missing)}")
    from safetensors import safe_open  # the Rust reader; framework="np" keeps torch out

    weights = src / ADAPTER_FILES[0]
    try:
        with safe_open(str(weights), framework="np") as f:
            empty = not list(f.keys())
    except Exception as exc:
        raise InputError(f"{weights} is not a valid safetensors file: {' '.join(str(exc).split())}") from None
    if empty:
        raise InputError(f"{weights} holds no tensors")
    try:
        config = json.loads((src / ADAPTER_FILES[1]).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        config = None
    if not isinstance(config, dict):
        raise InputError(f"{src / ADAPTER_FILES[1]} is not a JSON object")
    return [src / n for n in ADAPTER_FILES + OPTIONAL_FILES if (src / n).is_file()]


def stage(staging: Path, files: list[Path], meta: dict) -> tuple[str, dict]:
    """Fill `staging` with the files, the sidecar and the manifest; returns (adapter id, manifest)."""
    for f in files:
        shutil.copyfile(f, staging / f.name)
    sidecar = json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (staging / SIDECAR).write_text(sidecar, encoding="utf-8")
    manifest = {"schema": 1, "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir())}}
    manifest_bytes = canonical_json(manifest)
    (staging / MANIFEST).write_bytes(manifest_bytes)
    for p in staging.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
        p.chmod(0o444)  # stored versions are immutable; read-only discourages accidents
    staging.chmod(0o755)  # mkdtemp makes it 0700; a server running as another user must read it
    fsync_dir(staging)
    return hashlib.sha256(manifest_bytes).hexdigest(), manifest


def publish(ws: Workspace, staging: Path, adapter_id: str) -> bool:
    """Rename the staged folder into place. False if an intact copy was already there (a duplicate
    or an earlier attempt that died before its commit); a damaged unregistered copy is moved aside."""
    final = ws.adapters_dir / adapter_id
    if final.exists():
        if not folder_problems(final, adapter_id):
            return False
        os.replace(final, ws.tmp_dir / f"damaged-orphan-{adapter_id[:12]}-{time.time_ns()}")
    os.replace(staging, final)
    fsync_dir(ws.adapters_dir)
    return True


def clean_stale(ws: Workspace) -> None:
    """Remove staging folders that dead writers left in tmp/ (live writers' are fresh)."""
    cutoff = time.time() - STALE_SECONDS
    for entry in ws.tmp_dir.iterdir() if ws.tmp_dir.is_dir() else ():
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime < cutoff:
                remove(entry)


def collect_orphans(ws: Workspace, registered: set[str], min_age_s: float = STALE_SECONDS) -> list[str]:
    cutoff = time.time() - min_age_s
    removed = []
    for entry in ws.adapters_dir.iterdir() if ws.adapters_dir.is_dir() else ():
        with contextlib.suppress(OSError):
            if entry.name not in registered and entry.lstat().st_mtime < cutoff:
                remove(entry)
                removed.append(entry.name)
    return removed


def folder_problems(folder: Path, adapter_id: str, label: str | None = None) -> list[str]:
    """What no longer matches in one stored folder: manifest vs id, each file vs the manifest."""
    name = label or adapter_id[:12]
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        return [f"{name}: stored folder {folder.name} is missing"]
    if not manifest_path.is_file():
        return [f"{name}: {MANIFEST} is missing"]
    raw = manifest_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != adapter_id:
        return [f"{name}: {MANIFEST} does not match the adapter id (edited)"]
    files = json.loads(raw)["files"]
    problems = []
    for fname, digest in sorted(files.items()):
        path = folder / fname
        if not path.is_file():
            problems.append(f"{name}: {fname} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: {fname} does not match its sha256 (tampered)")
    for extra in sorted(p.name for p in folder.iterdir() if p.name not in files and p.name != MANIFEST):
        problems.append(f"{name}: unexpected file {extra}")
    return problems
