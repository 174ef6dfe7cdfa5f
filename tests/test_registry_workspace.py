"""Workspace creation, base fingerprints, the SQLite index and what happens when it is damaged."""

import hashlib
import os
import sqlite3

import pytest

from forgetctl.errors import IncompatibleError, InputError, IntegrityError, NotFoundError
from forgetctl.registry import Registry, fingerprint
from forgetctl.registry import db as regdb
from tests.registry_util import FP, reg  # noqa: F401


def test_fingerprint_is_sha256_of_weight_files_in_name_order(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"second")
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"first")
    (folder / "config.json").write_text("{}")  # not a weight file: ignored
    assert fingerprint(folder) == "sha256:" + hashlib.sha256(b"firstsecond").hexdigest()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF....")
    assert fingerprint(gguf) == "sha256:" + hashlib.sha256(b"GGUF....").hexdigest()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .safetensors"):
        fingerprint(tmp_path / "empty")
    with pytest.raises(NotFoundError):
        fingerprint(tmp_path / "missing")


def test_fingerprint_cache_is_keyed_by_size_and_mtime(tmp_path):
    weights = tmp_path / "m" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"aaaa")
    cache = tmp_path / "ws" / "cache" / "fingerprints.json"
    first = fingerprint(weights.parent, cache_file=cache)
    assert cache.is_file()
    stamp = weights.stat().st_mtime_ns
    weights.write_bytes(b"bbbb")  # same size, mtime put back: the cache answers (not re-hashed)
    os.utime(weights, ns=(stamp, stamp))
    assert fingerprint(weights.parent, cache_file=cache) == first
    os.utime(weights, ns=(stamp + 10**9, stamp + 10**9))
    assert fingerprint(weights.parent, cache_file=cache) == "sha256:" + hashlib.sha256(b"bbbb").hexdigest()
    cache.write_text("{not json")  # a damaged cache only costs a re-hash
    assert fingerprint(weights.parent, cache_file=cache) == "sha256:" + hashlib.sha256(b"bbbb").hexdigest()


def test_init_workspace_binds_base_and_refuses_another(tmp_path, tiny_base_dir, other_tiny_base_dir):
    from forgetctl.ops.workspace import init_workspace

    home = tmp_path / "ws"
    reg = init_workspace(home, str(tiny_base_dir), actor="dpo")
    assert reg.base.fingerprint == fingerprint(tiny_base_dir)
    assert reg.base.path == str(tiny_base_dir) and reg.head().label == "c0"
    assert (home / "cache" / "fingerprints.json").is_file()
    again = init_workspace(home, str(tiny_base_dir))
    assert len(again.audit_log()) == 1 and again.secret() == reg.secret()
    with pytest.raises(IncompatibleError, match="already unlearns against"):
        init_workspace(home, str(other_tiny_base_dir))
    assert Registry.open(home).base.fingerprint == reg.base.fingerprint


def test_schema_version_and_newer_schema_refused(reg):
    conn = sqlite3.connect(str(reg.ws.db))
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == list(range(1, regdb.SCHEMA_VERSION + 1))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(IncompatibleError, match="schema 99"):
        Registry.open(reg.home)


def _close_and_damage(reg, data: bytes | None = None, keep: int | None = None):
    reg.close()
    raw = reg.ws.db.read_bytes()
    for suffix in ("-wal", "-shm"):
        reg.ws.db.with_name(reg.ws.db.name + suffix).unlink(missing_ok=True)
    reg.ws.db.write_bytes(data if data is not None else raw[:keep])


def test_garbage_database_is_one_line_integrity_error(reg):
    _close_and_damage(reg, data=b"this is definitely not an sqlite database" * 100)
    with pytest.raises(IntegrityError, match="unreadable or corrupted") as err:
        Registry.open(reg.home)
    assert "\n" not in str(err.value)


def test_truncated_database_is_integrity_error(reg):
    _close_and_damage(reg, keep=4096)
    with pytest.raises(IntegrityError):
        r = Registry.open(reg.home)
        r.adapters()
        assert r.verify() == []  # if it opened at all, verify must flag it


def test_database_busy_waits_for_the_writer(reg):
    other = Registry.open(reg.home)
    blocker = sqlite3.connect(str(reg.ws.db), isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    import threading

    timer = threading.Timer(0.5, lambda: blocker.execute("ROLLBACK"))
    timer.start()
    entry = other.audit("note", {}, {})  # waits for the lock instead of failing
    timer.join()
    assert entry.seq == 2 and reg.verify() == []


def test_default_spec_matches_the_resolver():
    from forgetctl.adapters.base_model import DEFAULT_BASE
    from forgetctl.ops.workspace import DEFAULT_BASE_SPEC

    assert DEFAULT_BASE_SPEC == DEFAULT_BASE


def test_reinit_same_base_skips_torch_and_changed_weights_are_refused(tmp_path, tiny_base_copy):
    import subprocess
    import sys

    from forgetctl.ops.workspace import init_workspace

    home = tmp_path / "ws"
    first = init_workspace(home, str(tiny_base_copy))
    code = (
        "import sys\nfrom forgetctl.ops.workspace import init_workspace\n"
        f"reg = init_workspace({str(home)!r}, {str(tiny_base_copy)!r})\n"
        "assert len(reg.audit_log()) == 1\nassert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    weights = sorted(tiny_base_copy.glob("*.safetensors"))[0]
    with open(weights, "ab") as f:  # the folder's weights changed in place after init
        f.write(b"\0")
    with pytest.raises(IncompatibleError, match="already unlearns against"):
        init_workspace(home, str(tiny_base_copy))
    assert Registry.open(home).base.fingerprint == first.base.fingerprint


def test_wiped_database_is_not_mistaken_for_a_new_workspace(reg, tmp_path):
    _close_and_damage(reg, data=b"")
    with pytest.raises(IntegrityError, match="lost or replaced"):
        Registry.open(reg.home)
    with pytest.raises(IntegrityError, match="lost or replaced"):
        Registry.init(reg.home, "tiny-base", tmp_path / "base", FP)
