"""Registry core: init, adapter versions, compositions, pointers, evaluations."""

import hashlib
import json
import sqlite3
import stat

import pytest

from forgetctl.errors import IncompatibleError, InputError, NotFoundError
from forgetctl.registry import Registry
from forgetctl.registry.store import composition_id
from tests.registry_util import FP, OTHER_FP, lora_dir, meta_for, raw_db, reg, register  # noqa: F401


def test_init_creates_pristine_head_and_private_secret(reg):
    head = reg.head()
    assert head.label == "c0" and head.adapters == () and head.id == composition_id([])
    assert reg.pointers() == {"HEAD": head.id}
    assert len(reg.secret()) == 32
    assert stat.S_IMODE(reg.ws.secret_file.stat().st_mode) == 0o600
    assert [e.action for e in reg.audit_log()] == ["init"]
    assert reg.base.fingerprint == FP
    assert reg.verify() == []


def test_init_again_same_base_is_noop_other_base_refused(reg, tmp_path):
    secret = reg.secret()
    again = Registry.init(reg.home, "tiny-base", tmp_path / "base", FP)
    assert again.secret() == secret and len(again.audit_log()) == 1
    with pytest.raises(IncompatibleError, match="sha256:abababab.*sha256:cdcdcdcd"):
        Registry.init(reg.home, "other", tmp_path / "other", OTHER_FP)
    assert Registry.open(reg.home).base.fingerprint == FP


def test_open_without_workspace_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="no forgetctl workspace"):
        Registry.open(tmp_path / "nowhere")


def test_register_stores_content_addressed_copy(reg, lora_dir):
    version = register(reg, lora_dir, "req-1")
    folder = reg.adapter_dir(version)
    manifest = (folder / "manifest.json").read_bytes()
    assert version.id == hashlib.sha256(manifest).hexdigest() == folder.name
    assert version.label == "v1" and version.request_id == "req-1"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (folder / name).read_bytes() == (lora_dir / name).read_bytes()
        assert json.loads(manifest)["files"][name] == hashlib.sha256((lora_dir / name).read_bytes()).hexdigest()
    sidecar = json.loads((folder / "forgetctl.json").read_text())
    assert sidecar["request_id"] == "req-1" and sidecar["commitment"]["count"] == 3
    assert list(reg.ws.tmp_dir.iterdir()) == []
    assert reg.verify() == []


def test_registered_folder_loads_with_peft(reg, lora_dir, tiny_base_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    version = register(reg, lora_dir, "req-1")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(reg.adapter_dir(version)))
    loaded = {k for k in model.state_dict() if "lora_A" in k}
    assert loaded, "no LoRA weights were loaded"


def test_numbers_go_up_and_duplicates_return_existing(reg, lora_dir):
    v1 = register(reg, lora_dir, "req-1")
    v2 = register(reg, lora_dir, "req-2")
    again = register(reg, lora_dir, "req-1")
    assert (v1.number, v2.number) == (1, 2) and again == v1
    assert [v.label for v in reg.adapters()] == ["v1", "v2"]
    assert len([e for e in reg.audit_log() if e.action == "register"]) == 2


def test_adapter_refs(reg, lora_dir):
    v1 = register(reg, lora_dir, "req-1")
    v2 = register(reg, lora_dir, "req-2")
    assert reg.adapter("1") == reg.adapter("v1") == reg.adapter(v1.id) == reg.adapter(v1.id[:10]) == v1
    assert reg.adapter("req-2") == v2
    with pytest.raises(NotFoundError, match="'v7'"):
        reg.adapter("v7")
    with pytest.raises(NotFoundError, match="'nobody'"):
        reg.adapter("nobody")


def test_adapter_from_another_base_is_refused(reg, lora_dir):
    with pytest.raises(IncompatibleError, match="sha256:cdcdcdcdcdcd.*sha256:abababababab"):
        reg.register_adapter(lora_dir, meta_for(reg, "req-1", base_fingerprint=OTHER_FP), None)
    assert reg.adapters() == [] and list(reg.ws.adapters_dir.iterdir()) == []


@pytest.mark.parametrize(
    "over, message",
    [
        ({"reason": "because"}, "reason must be one of"),
        ({"request_id": "../etc"}, "path separators"),
        ({"method": ""}, "lacks 'method'"),
        ({"parent_composition": "c99"}, "unknown composition"),
        ({"metrics_after": {"x": object()}}, "plain JSON"),
    ],
)
def test_bad_meta_is_refused_and_nothing_stored(reg, lora_dir, over, message):
    with pytest.raises((InputError, NotFoundError), match=message):
        reg.register_adapter(lora_dir, meta_for(reg, "req-1", **over), None)
    assert reg.adapters() == [] and list(reg.ws.adapters_dir.iterdir()) == []


def test_non_finite_metrics_are_stored_as_null(reg, lora_dir):
    version = reg.register_adapter(lora_dir, meta_for(reg, "req-1", metrics_after={"mia_auc": float("nan")}), None)
    assert version.meta["metrics_after"] == {"mia_auc": None}


def test_not_an_adapter_folder(reg, tmp_path, lora_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="missing adapter_model.safetensors, adapter_config.json"):
        reg.register_adapter(empty, meta_for(reg, "req-1"), None)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_model.safetensors").write_bytes(b"not a safetensors file at all")
    (bad / "adapter_config.json").write_bytes((lora_dir / "adapter_config.json").read_bytes())
    with pytest.raises(InputError, match="not a valid safetensors"):
        reg.register_adapter(bad, meta_for(reg, "req-1"), None)
    with pytest.raises(NotFoundError):
        reg.register_adapter(tmp_path / "missing", meta_for(reg, "req-1"), None)


def test_compositions_are_content_addressed(reg, lora_dir):
    v1, v2 = register(reg, lora_dir, "req-1"), register(reg, lora_dir, "req-2")
    c1 = reg.compose([v1.id], parent="HEAD", note="one")
    c2 = reg.compose([v1.id, v2.id], parent=c1.id, note="two")
    assert reg.compose([v1.id, v2.id], parent=None, note="again") == c2
    c3 = reg.compose([v2.id, v1.id], parent=c2.id, note="other order")
    assert [c.label for c in reg.compositions()] == ["c0", "c1", "c2", "c3"]
    assert c3.id != c2.id and c2.adapters == (v1.id, v2.id) and c2.parent == c1.id
    assert reg.composition("c2") == reg.composition("2") == reg.composition(c2.id[:8]) == c2
    with pytest.raises(InputError, match="same adapter twice"):
        reg.compose([v1.id, v1.id], parent=None, note="")
    with pytest.raises(NotFoundError, match="'c9'"):
        reg.composition("c9")


def test_pointers_move_and_history_is_kept(reg, lora_dir):
    v1 = register(reg, lora_dir, "req-1")
    c0, c1 = reg.head(), reg.compose([v1.id], parent="HEAD", note="train")
    reg.move_pointer("HEAD", c1.id, action="train")
    reg.set_alias("production", "HEAD")
    reg.move_pointer("HEAD", c0.id, action="rollback")
    assert reg.head() == c0 and reg.composition("production") == c1
    moves = [(m.name, m.from_id, m.to_id, m.action) for m in reg.pointer_history()]
    assert moves == [
        ("HEAD", None, c0.id, "init"), ("HEAD", c0.id, c1.id, "train"),
        ("production", None, c1.id, "alias"), ("HEAD", c1.id, c0.id, "rollback"),
    ]
    assert [e.action for e in reg.audit_log()][-3:] == ["train", "alias", "rollback"]
    with pytest.raises(InputError, match="HEAD cannot be set"):
        reg.set_alias("HEAD", "c1")
    with pytest.raises(NotFoundError, match="'nowhere'"):
        reg.set_alias("staging", "nowhere")
    assert reg.verify() == []


def test_evaluations_are_numbers_only(reg):
    e = reg.add_evaluation("HEAD", {"forget_nll": 1.5, "steps": 3}, "baseline")
    assert e.metrics == {"forget_nll": 1.5, "steps": 3.0} and e.composition_id == reg.head().id
    for bad in ({"x": "high"}, {"x": None}, {"x": True}, {"x": float("inf")}, {}):
        with pytest.raises(InputError):
            reg.add_evaluation("HEAD", bad, "bad")
    assert [x.seq for x in reg.evaluations("HEAD")] == [e.seq]


def test_audit_payloads_refuse_text(reg):
    entry = reg.audit("export", {"composition": reg.head().id}, {"sha256": "ab" * 32, "files": 2})
    assert entry.seq == 2 and entry.prev_hash == reg.audit_log()[0].hash
    with pytest.raises(InputError, match="not text"):
        reg.audit("export", {"note": "a long story\nover two lines"}, {})
    with pytest.raises(InputError, match="lowercase"):
        reg.audit("Export Now", {}, {})


def test_tables_refuse_update_and_delete(reg):
    conn = sqlite3.connect(str(reg.ws.db))
    for sql in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM pointer_moves", "UPDATE base SET fingerprint = 'x'"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_orphan_object_folders_are_collected(reg, lora_dir):
    register(reg, lora_dir, "req-1")
    orphan = reg.ws.adapters_dir / ("f" * 64)
    orphan.mkdir()
    (orphan / "adapter_model.safetensors").write_bytes(b"x")
    assert reg.verify() == []
    assert reg.collect_orphans(min_age_s=0) == ["f" * 64]
    assert not orphan.exists() and len(list(reg.ws.adapters_dir.iterdir())) == 1
    assert reg.verify() == []


def test_dead_writers_staging_folders_are_cleaned_later(reg, lora_dir):
    import os
    import time

    stale, fresh = reg.ws.tmp_dir / "adapter-dead", reg.ws.tmp_dir / "adapter-live"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"half a copy")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert reg.verify() == []  # orphans are not corruption
    register(reg, lora_dir, "req-1")
    assert not stale.exists() and fresh.exists()  # a live writer's folder is left alone
