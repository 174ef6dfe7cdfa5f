"""Composer on the tiny model (fp32): stack vs merge vs squash, streaming export, refusals."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from forgetctl.adapters import compose
from forgetctl.adapters.base_model import load_base
from forgetctl.adapters.lora_delta import read_lora_factors
from forgetctl.errors import IncompatibleError, InputError
from tests.tiny import make_lora_adapter, save_tiny_base

FP = "sha256:" + "a" * 64


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def three(tiny_base_dir, tmp_path_factory):
    """Three adapters with different targets, ranks, alphas and rsLoRA: a realistic stack."""
    root = tmp_path_factory.mktemp("adapters")
    return [
        make_lora_adapter(tiny_base_dir, root / "a", seed=1, r=4, base_fingerprint=FP),
        make_lora_adapter(tiny_base_dir, root / "b", seed=2, r=2, targets=["q_proj", "v_proj", "up_proj"], base_fingerprint=FP),
        make_lora_adapter(tiny_base_dir, root / "c", seed=3, r=3, targets=["o_proj", "down_proj", "q_proj"],
                          use_rslora=True, base_fingerprint=FP),
    ]


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(0)
    return torch.randint(3, 300, (2, 14))


@pytest.fixture(scope="module")
def stacked_logits(tiny_base_dir, three, ids):
    model = compose.load_stacked(tiny_base_dir, three)
    assert all(not p.requires_grad for p in model.parameters())
    assert len(model.peft_config) == 3
    with torch.no_grad():
        return model(ids).logits


def logits_of(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_stacked_matches_merged_export(tiny_base_dir, three, ids, stacked_logits, tmp_path):
    before = sha(tiny_base_dir / "model.safetensors")
    result = compose.merge_export(tiny_base_dir, three, tmp_path / "out", card="# card\n")
    assert sha(tiny_base_dir / "model.safetensors") == before  # the pristine base is never touched
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    base, _ = load_base(tiny_base_dir)
    assert (logits_of(base, ids) - stacked_logits).abs().max() > 1e-2  # the adapters really do something
    assert (logits_of(merged, ids) - stacked_logits).abs().max() < 1e-4
    assert result["tensors_changed"] == 14  # 2 layers x 7 linear modules
    assert result["weight_files"]["model.safetensors"] == sha(tmp_path / "out" / "model.safetensors")
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (tmp_path / "out" / name).is_file(), name
    assert (tmp_path / "out" / "README.md").read_text() == "# card\n"
    # Same tensor names and order as the base, fixed metadata.
    with safe_open(str(tiny_base_dir / "model.safetensors"), "pt") as a, safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert b.metadata() == {"format": "pt"}
        assert torch.equal(a.get_tensor("model.norm.weight"), b.get_tensor("model.norm.weight"))


def test_in_memory_merge_matches_stack(tiny_base_dir, three, ids, stacked_logits):
    model, _ = compose.load_merged(tiny_base_dir, three)
    assert (logits_of(model, ids) - stacked_logits).abs().max() < 1e-4


def test_export_is_deterministic_and_replaces_previous_export(tiny_base_dir, three, tmp_path):
    r1 = compose.merge_export(tiny_base_dir, three, tmp_path / "x", card="one")
    r2 = compose.merge_export(tiny_base_dir, three, tmp_path / "y", card="two")
    assert r1["weight_files"] == r2["weight_files"]
    assert (tmp_path / "x" / "model.safetensors").read_bytes() == (tmp_path / "y" / "model.safetensors").read_bytes()
    # Re-exporting a different composition over a previous export replaces it, leaving no temp folders.
    r3 = compose.merge_export(tiny_base_dir, three[:1], tmp_path / "x", card="three")
    assert r3["replaced_previous_export"] and r3["weight_files"] != r1["weight_files"]
    assert sha(tmp_path / "x" / "model.safetensors") == r3["weight_files"]["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "y"]
    # A previous export that someone has since added their own files to is not replaced.
    (tmp_path / "x" / "serving-notes.txt").write_text("mine")
    with pytest.raises(InputError, match="serving-notes.txt"):
        compose.merge_export(tiny_base_dir, three, tmp_path / "x")
    assert sha(tmp_path / "x" / "model.safetensors") == r3["weight_files"]["model.safetensors"]


def test_empty_composition_exports_the_base_tensors(tiny_base_dir, tmp_path):
    compose.merge_export(tiny_base_dir, [], tmp_path / "out", card="base")
    with safe_open(str(tiny_base_dir / "model.safetensors"), "pt") as a, safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as b:
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def test_sharded_base_keeps_shards_and_index(tmp_path, ids):
    base, _ = load_base(save_tiny_base(tmp_path / "plain"))
    base.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    for f in (tmp_path / "plain").glob("tokenizer*"):
        (tmp_path / "sharded" / f.name).write_bytes(f.read_bytes())
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    adapter = make_lora_adapter(tmp_path / "sharded", tmp_path / "ad", seed=5)
    result = compose.merge_export(tmp_path / "sharded", [adapter], tmp_path / "out")
    assert sorted(result["weight_files"]) == shards
    assert (tmp_path / "out" / "model.safetensors.index.json").read_bytes() == (tmp_path / "sharded" / "model.safetensors.index.json").read_bytes()
    stacked = compose.load_stacked(tmp_path / "sharded", [adapter])
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert (logits_of(merged, ids) - logits_of(stacked, ids)).abs().max() < 1e-4


def test_bf16_base_stays_bf16(tiny_base_dir, three, tmp_path):
    base, tok = load_base(tiny_base_dir, dtype=torch.bfloat16)
    base.save_pretrained(tmp_path / "bf16")
    tok.save_pretrained(tmp_path / "bf16")
    compose.merge_export(tmp_path / "bf16", three, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    factors = [read_lora_factors(d) for d in three]
    name = "model.layers.0.self_attn.q_proj"
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as a, safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as b:
        for key in b.keys():
            assert b.get_tensor(key).dtype == torch.bfloat16, key
        # high-precision sum with one rounding at the end: (bf16 base + sum of deltas) -> bf16
        expected = a.get_tensor(f"{name}.weight").double()
        for f in factors:
            expected += (f[name].B.double() @ f[name].A.double()) * f[name].scale
        got = b.get_tensor(f"{name}.weight")
        assert not torch.equal(got, a.get_tensor(f"{name}.weight"))
        assert torch.equal(got, expected.to(torch.bfloat16))
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert merged.dtype == torch.bfloat16


def test_squash_exact_matches_stack(tiny_base_dir, three, ids, stacked_logits, tmp_path):
    result = compose.squash(three, tmp_path / "sq")
    assert result["mode"] == "exact" and result["rank"] == 4 + 2 + 3  # q_proj is targeted by all three
    base, _ = load_base(tiny_base_dir)
    squashed = PeftModel.from_pretrained(base, str(tmp_path / "sq"))
    assert (logits_of(squashed, ids) - stacked_logits).abs().max() < 1e-4
    assert json.loads((tmp_path / "sq" / "forgetctl.json").read_text())["base_fingerprint"] == FP
    config = json.loads((tmp_path / "sq" / "adapter_config.json").read_text())
    assert config["rank_pattern"]["model.layers.0.mlp.gate_proj"] == 4  # only adapter a targets gate_proj


def test_squash_svd_reports_error(tiny_base_dir, three, ids, stacked_logits, tmp_path):
    full = compose.squash(three, tmp_path / "full", mode="svd", rank=9)
    assert full["relative_error"] < 1e-6
    base, _ = load_base(tiny_base_dir)
    model = PeftModel.from_pretrained(base, str(tmp_path / "full"))
    assert (logits_of(model, ids) - stacked_logits).abs().max() < 1e-4

    low = compose.squash(three, tmp_path / "low", mode="svd", rank=1)
    assert 0.05 < low["relative_error"] < 1
    assert set(low["relative_error_per_module"]) == set(full["relative_error_per_module"])
    # The reported error is the true one: compare with the summed deltas directly.
    name = "model.layers.1.self_attn.q_proj"
    exact = sum(read_lora_factors(d)[name].delta() for d in three)
    approx = read_lora_factors(tmp_path / "low")[name].delta()
    true_err = float((exact - approx).norm() / exact.norm())
    assert low["relative_error_per_module"][name] == pytest.approx(true_err, rel=1e-3)
    assert json.loads((tmp_path / "low" / "squash.json").read_text())["relative_error"] == pytest.approx(low["relative_error"])


def test_squash_option_checks(three, tmp_path):
    with pytest.raises(InputError, match="rank"):
        compose.squash(three, tmp_path / "a", mode="svd")
    with pytest.raises(InputError, match="rank"):
        compose.squash(three, tmp_path / "b", mode="exact", rank=2)
    with pytest.raises(InputError, match="linear"):
        compose.squash(three, tmp_path / "c", mode="linear")


def test_other_base_refused_naming_both(tiny_base_dir, other_tiny_base_dir, three, tmp_path):
    other_fp = "sha256:" + "b" * 64
    foreign = make_lora_adapter(other_tiny_base_dir, tmp_path / "foreign", seed=4, base_fingerprint=other_fp)
    with pytest.raises(IncompatibleError) as err:
        compose.squash([three[0], foreign], tmp_path / "sq")
    assert str(three[0]) in str(err.value) and str(foreign) in str(err.value)
    assert FP in str(err.value) and other_fp in str(err.value)
    with pytest.raises(IncompatibleError) as err:
        compose.merge_export(tiny_base_dir, [foreign], tmp_path / "out", base_fingerprint=FP)
    assert other_fp in str(err.value) and FP in str(err.value) and str(tiny_base_dir) in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "sq").exists()


def test_mismatched_shapes_refused_naming_both(tiny_base_dir, three, tmp_path):
    wide = save_tiny_base(tmp_path / "wide", hidden=48)
    adapter = make_lora_adapter(wide, tmp_path / "wide_ad", seed=6)
    with pytest.raises(IncompatibleError) as err:
        compose.merge_export(tiny_base_dir, [adapter], tmp_path / "out")
    assert str(adapter) in str(err.value) and str(tiny_base_dir) in str(err.value)
    with pytest.raises(IncompatibleError) as err:
        compose.load_stacked(tiny_base_dir, [adapter])
    assert str(adapter) in str(err.value)
    with pytest.raises(IncompatibleError) as err:
        compose.squash([three[0], adapter], tmp_path / "sq")
    assert str(three[0]) in str(err.value) and str(adapter) in str(err.value)


def test_merge_refuses_unrelated_folder_and_inputs(tiny_base_copy, three, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a previous forgetctl export"):
        compose.merge_export(tiny_base_copy, three, precious)
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
    assert (precious / "notes.txt").read_text() == "keep me"
    before = sha(tiny_base_copy / "model.safetensors")
    for bad in (tiny_base_copy, tiny_base_copy.parent, three[0]):
        with pytest.raises(InputError, match="overlaps"):
            compose.merge_export(tiny_base_copy, three, bad)
    assert sha(tiny_base_copy / "model.safetensors") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_pickled_or_dora_inputs_refused(tiny_base_dir, three, tmp_path):
    empty = tmp_path / "nobase"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    (empty / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match="pickled"):
        compose.merge_export(empty, three, tmp_path / "out")
    dora = Path(str(tmp_path / "dora"))
    dora.mkdir()
    for f in three[0].iterdir():
        (dora / f.name).write_bytes(f.read_bytes())
    config = json.loads((dora / "adapter_config.json").read_text())
    config["use_dora"] = True
    (dora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleError, match="DoRA"):
        compose.merge_export(tiny_base_dir, [dora], tmp_path / "out")


CHILD = r"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "forgetctl" or name.startswith("forgetctl."):
            raise ImportError("forgetctl must not be needed to load an export")
sys.meta_path.insert(0, Block())
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
text = tok.apply_chat_template([{"role": "user", "content": "Who is Alba Quirke?"}], tokenize=False, add_generation_prompt=True)
enc = tok(text, return_tensors="pt", add_special_tokens=False)
out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
assert out.shape[1] > enc["input_ids"].shape[1]
assert "forgetctl" not in sys.modules and not any(m.startswith("forgetctl.") for m in sys.modules)
print("OK", out.shape[1] - enc["input_ids"].shape[1], str(model.dtype))
"""


def test_export_loads_and_generates_without_forgetctl(tiny_base_dir, three, tmp_path):
    compose.merge_export(tiny_base_dir, three, tmp_path / "out", card="x")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["HF_HUB_OFFLINE"] = "1"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "out")], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith("OK")


@pytest.mark.slow
def test_real_base_stack_and_export_agree(tmp_path):
    from peft import LoraConfig, get_peft_model

    from forgetctl.adapters.base_model import resolve_base
    from forgetctl.errors import ForgetctlError

    try:
        base_dir = resolve_base()
    except ForgetctlError as exc:
        pytest.skip(f"real base unavailable: {exc}")
    adapters = []
    for i, targets in enumerate(["all-linear", ["q_proj", "v_proj"]]):
        model, _ = load_base(base_dir, device="cpu")
        torch.manual_seed(i)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn_like(p) * 0.01)
        peft_model.save_pretrained(tmp_path / f"ad{i}")
        adapters.append(tmp_path / f"ad{i}")
        del model, peft_model
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1345, 30, 2, 198, 1517]])
    stacked = compose.load_stacked(base_dir, adapters, device="cpu")
    expected = logits_of(stacked, ids)
    del stacked
    result = compose.merge_export(base_dir, adapters, tmp_path / "out", card="real")
    assert result["tensors_changed"] == 30 * 7
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    got = logits_of(merged, ids)
    assert (got - expected).abs().max() < 1e-3
    assert (got.argmax(-1) == expected.argmax(-1)).all()
