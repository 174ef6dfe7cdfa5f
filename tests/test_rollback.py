"""Registry-driven composer: merge a composition, roll HEAD back (to a target or without an adapter), squash.

The key property: exporting composition K after rolling back to it is bit-identical to the export made
when K was HEAD, and rollback deletes nothing.
"""

import hashlib
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from forgetctl.adapters import compose
from forgetctl.errors import InputError, IntegrityError, NotFoundError
from forgetctl.ops.compose import merge_version, rollback, squash_versions
from forgetctl.ops.workspace import init_workspace
from forgetctl.registry import Registry
from tests.tiny import make_lora_adapter


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def raw_adapters(tiny_base_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    return [
        make_lora_adapter(tiny_base_dir, root / "r1", seed=11, r=4),
        make_lora_adapter(tiny_base_dir, root / "r2", seed=12, r=2, targets=["q_proj", "v_proj", "down_proj"]),
        make_lora_adapter(tiny_base_dir, root / "r3", seed=13, r=3, targets=["o_proj", "up_proj", "q_proj"]),
    ]


def train_on_head(reg: Registry, src: Path, i: int) -> None:
    """As ops/train does it: the adapter is trained on top of HEAD, registered, then HEAD moves."""
    head = reg.head()
    meta = {"request_id": f"req-{i}", "reason": "gdpr", "subject": f"subject-label-{i}", "method": "npo",
            "base_fingerprint": reg.base.fingerprint, "parent_composition": head.id}
    v = reg.register_adapter(src, meta)
    comp = reg.compose([*head.adapters, v.id], parent=head.id, note=f"train {v.label}")
    reg.move_pointer("HEAD", comp.id, action="train")


def build(home: Path, base_dir: Path, raw: list[Path]) -> Registry:
    reg = init_workspace(home, str(base_dir))
    for i, src in enumerate(raw, start=1):
        train_on_head(reg, src, i)
    return reg


@pytest.fixture()
def ws(tiny_base_dir, raw_adapters, tmp_path):
    home = tmp_path / "home"
    reg = build(home, tiny_base_dir, raw_adapters)
    reg.close()
    return home


def test_export_after_rollback_is_bit_identical(tiny_base_dir, raw_adapters, tmp_path):
    ws = tmp_path / "home"
    build(ws, tiny_base_dir, raw_adapters[:2]).close()
    k_export = merge_version(ws, out_dir=tmp_path / "when-head-c2")  # K = c2 is HEAD
    assert k_export["composition"] == "c2"
    with Registry.open(ws) as reg:
        train_on_head(reg, raw_adapters[2], 3)
    when_head = merge_version(ws, out_dir=tmp_path / "when-head-c3")
    assert when_head["composition"] == "c3"
    with Registry.open(ws) as reg:
        adapters_before = [a.id for a in reg.adapters()]
        comps_before = [c.id for c in reg.compositions()]

    result = rollback(ws, target="c2")
    assert (result["from"], result["to"], result["moved"]) == ("c3", "c2", True)
    after = merge_version(ws, out_dir=tmp_path / "after-rollback")
    assert after["composition"] == "c2" and after["adapters"] == ["v1", "v2"]
    assert after["weight_files"] == k_export["weight_files"]
    assert after["weight_files"] != when_head["weight_files"]
    for name, digest in after["weight_files"].items():
        assert sha(tmp_path / "after-rollback" / name) == digest == sha(tmp_path / "when-head-c2" / name)

    with Registry.open(ws) as reg:  # nothing deleted, the move is audited
        assert [a.id for a in reg.adapters()] == adapters_before
        assert [c.id for c in reg.compositions()] == comps_before
        assert all((reg.adapter_dir(a) / "adapter_model.safetensors").is_file() for a in reg.adapters())
        log = reg.audit_log()
        moves = [e for e in log if e.action == "rollback"]
        assert moves[-1].outputs["label"] == "c2"
        merges = [e for e in log if e.action == "merge"]
        assert merges[-1].outputs["weight_files"] == after["weight_files"]
        assert reg.verify() == []


def test_rollback_without_makes_a_new_composition(ws, tiny_base_dir, tmp_path):
    with Registry.open(ws) as reg:
        v1, v2, v3 = (reg.adapter(f"v{i}") for i in (1, 2, 3))
        n_before = len(reg.compositions())
    result = rollback(ws, without="v2", actor="dpo@example.org")
    assert result["moved"] and result["without"] == "v2" and result["adapters"] == ["v1", "v3"]
    assert any("v3" in w and "v2" in w for w in result["warnings"])  # v3 was trained on top of v2
    with Registry.open(ws) as reg:
        head = reg.head()
        assert head.adapters == (v1.id, v3.id) and len(reg.compositions()) == n_before + 1
        assert "v2" in head.note and reg.adapter("v2").id == v2.id  # still stored
        actions = [e.action for e in reg.audit_log()[-2:]]
        assert actions == ["compose", "rollback"]
        assert reg.audit_log()[-1].actor == "dpo@example.org"
        dirs = [reg.adapter_dir(v) for v in (v1, v3)]
    out = merge_version(ws, out_dir=tmp_path / "out")
    direct = compose.merge_export(tiny_base_dir, dirs, tmp_path / "direct")
    assert out["weight_files"] == direct["weight_files"]
    # Rolling back "without" the same adapter again: it is no longer in HEAD.
    with pytest.raises(NotFoundError, match="not in HEAD"):
        rollback(ws, without="v2")


def test_registry_stack_and_merge_agree(ws, tmp_path):
    out = merge_version(ws, out_dir=tmp_path / "out")
    with Registry.open(ws) as reg:
        dirs = [reg.adapter_dir(reg.adapter(a)) for a in reg.head().adapters]
        base = reg.base.path
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (2, 10))
    stacked = compose.load_stacked(base, dirs)
    merged = AutoModelForCausalLM.from_pretrained(out["out_dir"])
    with torch.no_grad():
        assert (stacked(ids).logits - merged(ids).logits).abs().max() < 1e-4


def test_card_names_composition_adapters_and_audit_head(ws, tmp_path):
    with Registry.open(ws) as reg:
        head_hash = reg.audit_log()[-1].hash
        comp = reg.head()
    merge_version(ws, out_dir=tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert comp.id in card and head_hash in card
    assert all(a in card for a in comp.adapters)
    assert "subject-label" not in card  # the subject of a request is personal data: never in a public card


def test_rollback_errors_leave_head_alone(ws):
    with Registry.open(ws) as reg:
        head = reg.head().id
        n_log = len(reg.audit_log())
    with pytest.raises(InputError):
        rollback(ws)
    with pytest.raises(InputError):
        rollback(ws, target="c1", without="v1")
    with pytest.raises(NotFoundError):
        rollback(ws, target="c99")
    with pytest.raises(NotFoundError):
        rollback(ws, without="v42")
    same = rollback(ws, target="HEAD")
    assert not same["moved"]
    with Registry.open(ws) as reg:
        assert reg.head().id == head and len(reg.audit_log()) == n_log


def test_rollback_to_pristine_exports_the_base(ws, tiny_base_dir, tmp_path):
    rollback(ws, target="c0")
    out = merge_version(ws, out_dir=tmp_path / "out")
    assert out["adapters"] == [] and out["tensors_changed"] == 0


def test_merge_refuses_a_changed_base(tiny_base_copy, raw_adapters, tmp_path):
    home = tmp_path / "home"
    build(home, tiny_base_copy, raw_adapters[:1]).close()
    data = bytearray((tiny_base_copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (tiny_base_copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="changed"):
        merge_version(home, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merge_into_unrelated_folder_refused_and_not_audited(ws, tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "thesis.tex").write_text("precious")
    with Registry.open(ws) as reg:
        n_log = len(reg.audit_log())
    with pytest.raises(InputError, match="not a previous forgetctl export"):
        merge_version(ws, out_dir=keep)
    assert (keep / "thesis.tex").read_text() == "precious" and len(list(keep.iterdir())) == 1
    with Registry.open(ws) as reg:
        assert len(reg.audit_log()) == n_log


def test_squash_versions_by_adapter_and_composition_refs(ws, tmp_path):
    a = squash_versions(ws, ["v1", "v2"], tmp_path / "a")
    assert a["adapters"] == ["v1", "v2"] and a["mode"] == "exact"
    b = squash_versions(ws, ["c3"], tmp_path / "b", mode="svd", rank=2)
    assert b["adapters"] == ["v1", "v2", "v3"] and 0 < b["relative_error"] < 1
    with Registry.open(ws) as reg:
        squashes = [e for e in reg.audit_log() if e.action == "squash"]
        assert len(squashes) == 2 and squashes[-1].outputs["relative_error"] == pytest.approx(b["relative_error"])
    with pytest.raises(NotFoundError):
        squash_versions(ws, ["v9"], tmp_path / "c")
