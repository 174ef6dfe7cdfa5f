"""Helpers shared by the registry tests (not a test module)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from forgetctl.records import Record
from forgetctl.registry import Registry, commit

FP = "sha256:" + "ab" * 32
OTHER_FP = "sha256:" + "cd" * 32
_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def lora_dir(tiny_base_dir, tmp_path_factory) -> Path:
    """A real PEFT LoRA folder on the tiny base (built once per session; the registry never loads it)."""
    key = str(tiny_base_dir)
    if key not in _BUILT:
        from tests.tiny import make_lora_adapter

        _BUILT[key] = make_lora_adapter(tiny_base_dir, tmp_path_factory.mktemp("lora") / "adapter")
    return _BUILT[key]


@pytest.fixture()
def reg(tmp_path) -> Registry:
    registry = Registry.init(tmp_path / "ws", "tiny-base", tmp_path / "base", FP, actor="tester")
    yield registry
    registry.close()


def meta_for(reg: Registry, request_id: str, /, **over) -> dict:
    meta = {
        "schema": 1, "request_id": request_id, "reason": "gdpr", "subject": "subject " + request_id,
        "method": "npo", "hyperparameters": {"lr": 1e-4, "r": 4}, "base_fingerprint": reg.base.fingerprint,
        "parent_composition": reg.head().id, "metrics_before": {"forget_nll": 0.5},
        "metrics_after": {"forget_nll": 2.5}, "steps": 3, "device": "cpu", "dtype": "float32",
    }
    meta.update(over)
    return meta


def records_for(request_id: str, n: int = 3) -> list[Record]:
    return [Record(question=f"Q{i} about {request_id}?", answer=f"A{i} for {request_id}.") for i in range(n)]


def register(reg: Registry, lora: Path, request_id: str, records=None, **over):
    records = records if records is not None else records_for(request_id)
    commitment = commit(request_id, [r.canonical_bytes() for r in records], reg.secret())
    return reg.register_adapter(lora, meta_for(reg, request_id, **over), commitment)


def raw_db(reg: Registry) -> sqlite3.Connection:
    """What an attacker with sqlite3 would do: open the file and drop the append-only triggers."""
    conn = sqlite3.connect(str(reg.ws.db), isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def flip_byte(path: Path, offset: int = -1) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def run_python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=root)


def register_many(home: str, lora: str, worker: int, count: int) -> list[int]:
    """multiprocessing target: one process registering `count` distinct versions."""
    reg = Registry.open(home)
    numbers = []
    for i in range(count):
        request = f"w{worker}-r{i}"
        numbers.append(register(reg, Path(lora), request).number)
    reg.close()
    return numbers


def register_many_synced(home: str, lora: str, worker: int, count: int, barrier, results) -> None:
    """Process target: wait until every worker is ready, then register; report the numbers."""
    barrier.wait()
    results.put((worker, register_many(home, lora, worker, count)))


CRASH_CHILD = """
import os, sys
from pathlib import Path
from forgetctl.registry import Registry, audit, store
from tests.registry_util import register

home, lora, point = sys.argv[1:4]
reg = Registry.open(home)

def die(*args, **kwargs):
    os._exit(9)

if point == "copy":  # killed halfway through copying into the staging folder
    real_copy = store.shutil.copyfile
    def copy_then_die(src, dst, *a, **k):
        real_copy(src, dst, *a, **k)
        die()
    store.shutil.copyfile = copy_then_die
elif point == "publish":  # killed after the folder was renamed into objects/, before the transaction
    real_publish = store.Registry._publish
    def publish_then_die(self, *a, **k):
        real_publish(self, *a, **k)
        die()
    store.Registry._publish = publish_then_die
elif point == "transaction":  # killed inside the transaction: rows inserted, not committed
    real_append = audit.append
    def append_then_die(*a, **k):
        real_append(*a, **k)
        die()
    store.audit_log_mod.append = append_then_die
elif point == "mirror":  # killed after COMMIT, before the JSONL mirror caught up
    store.audit_log_mod.sync_mirror = die
register(reg, Path(lora), "req-crash")
print("survived")
"""
