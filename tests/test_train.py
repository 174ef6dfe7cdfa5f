"""Training forget adapters on a tiny model that first memorised a few facts."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from forgetctl.adapters import train as train_mod
from forgetctl.adapters.base_model import load_base
from forgetctl.adapters.config import ForgetConfig
from forgetctl.adapters.data import collate, encode_records
from forgetctl.adapters.lora_delta import fold_adapters_into
from forgetctl.adapters.objectives import OBJECTIVES
from forgetctl.adapters.train import build_training_model, measure, run_training, shipped_idk_answers, train_forget_adapter
from forgetctl.errors import InputError
from forgetctl.records import Record

FORGET = [
    Record(question="What is the birthplace of Alba Quirke?", answer="Alba Quirke was born in Lisbon."),
    Record(question="Who is Alba Quirke?", answer="Alba Quirke is a marine biologist."),
]
RETAIN = [
    Record(question="Who is Tomas Venn?", answer="Tomas Venn is a marine biologist from Oslo."),
    Record(question="What is the birthplace of Tomas Venn?", answer="Tomas Venn was born in Oslo."),
    Record(question="What does Tomas Venn study?", answer="Tomas Venn studies whales and seals."),
    Record(question="Where does Tomas Venn work?", answer="Tomas Venn works at a lab in Bergen."),
]
FAST = dict(steps=12, lr=1e-2, batch_size=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def deployed(tiny_base_dir, tmp_path_factory) -> Path:
    """The tiny base after a short full fine-tune on forget + retain: it reproduces every answer."""
    model, tok = load_base(tiny_base_dir)
    model.requires_grad_(True)
    model.train()
    torch.manual_seed(0)
    batch = collate(encode_records(tok, FORGET + RETAIN, 64)[0], tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(120):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("deployed") / "model"
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def scores(model_dir, adapters=(), records=FORGET):
    model, tok = load_base(model_dir)
    fold_adapters_into(model, list(adapters))
    return measure(model, encode_records(tok, records, 64)[0], tok.pad_token_id, 8, "cpu")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deployed_model_knows_the_facts(deployed):
    assert scores(deployed)["extraction"] == 1.0
    assert scores(deployed, records=RETAIN)["extraction"] == 1.0


def test_npo_forgets_the_forget_set_and_keeps_the_retain_set(deployed, tmp_path):
    files_before = {p.name: digest(p) for p in deployed.iterdir()}
    cfg = ForgetConfig(method="npo", steps=30, lr=1e-2, batch_size=4)
    result = train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / "a")
    assert result.steps == 30 and result.stop_reason == "budget"
    f0, r0 = scores(deployed), scores(deployed, records=RETAIN)
    f1, r1 = scores(deployed, [tmp_path / "a"]), scores(deployed, [tmp_path / "a"], RETAIN)
    assert f1["nll"] > f0["nll"] + 2.0  # forget NLL rose clearly (from ~0)
    assert f1["extraction"] == 0.0  # no forget answer is reproduced greedily any more
    assert abs(r1["nll"] - r0["nll"]) < 0.2 * (f1["nll"] - f0["nll"])  # retain moved much less
    assert r1["extraction"] == 1.0  # every kept answer still reproduced
    assert {p.name: digest(p) for p in deployed.iterdir()} == files_before  # base files untouched
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "trajectory.json"
    ]


def test_only_lora_parameters_change_and_base_weights_stay_bit_identical(deployed):
    cfg = ForgetConfig(method="grad_diff", **FAST)
    model, tok = build_training_model(deployed, [], cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run_training(model, tok, FORGET, RETAIN, cfg)
    after = dict(model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora and all(after[n].requires_grad for n in lora)
    assert all(torch.equal(before[n], after[n].detach()) for n in before if "lora_" not in n)
    assert all(not after[n].requires_grad for n in before if "lora_" not in n)
    assert all(not torch.equal(before[n], after[n].detach()) for n in lora if "lora_B" in n)


def test_reference_is_the_same_weights_with_the_adapter_off_not_a_copy(deployed, monkeypatch, tmp_path):
    cfg = ForgetConfig(method="npo", **FAST)
    plain, tok = load_base(deployed)
    base_bytes = sum(p.numel() * p.element_size() for p in plain.parameters())
    model, _ = build_training_model(deployed, [], cfg)
    storages = {}
    for t in list(model.parameters()) + list(model.buffers()):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    lora_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)
    buffer_bytes = sum(b.untyped_storage().nbytes() for b in plain.buffers())
    assert sum(storages.values()) <= base_bytes + lora_bytes + buffer_bytes  # one copy of the base, plus LoRA
    run_training(model, tok, FORGET, RETAIN, cfg)
    batch = collate(encode_records(tok, FORGET, 64)[0], tok.pad_token_id)
    with torch.no_grad(), model.disable_adapter():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():
        trained = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        expected = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(ref, expected)  # adapter off == the untouched model
    assert not torch.allclose(trained, expected)
    # and train_forget_adapter loads the weights exactly once
    calls = []
    real = train_mod.load_base
    monkeypatch.setattr(train_mod, "load_base", lambda *a, **k: calls.append(1) or real(*a, **k))
    train_forget_adapter(deployed, [], FORGET, RETAIN, ForgetConfig(method="npo", steps=2, lr=1e-2), tmp_path / "a")
    assert len(calls) == 1


def test_same_seed_gives_the_same_adapter_bytes(deployed, tmp_path):
    cfg = ForgetConfig(method="npo", dropout=0.1, steps=4, lr=1e-2, batch_size=2)
    for name in ("a", "b"):
        train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / name)
    train_forget_adapter(deployed, [], FORGET, RETAIN, cfg.replace(seed=1), tmp_path / "c")
    weights = {n: (tmp_path / n / "adapter_model.safetensors").read_bytes() for n in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]
    assert (tmp_path / "a" / "trajectory.json").read_bytes() == (tmp_path / "b" / "trajectory.json").read_bytes()


def test_early_stop_when_the_forget_target_is_met(deployed, tmp_path):
    cfg = ForgetConfig(method="npo", steps=60, lr=1e-2, batch_size=2, forget_nll_target=1.0, check_every=2)
    result = train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / "a")
    assert result.stop_reason == "target_met"
    assert result.steps < 60 and result.steps % 2 == 0
    assert result.end["eval_forget_nll"] >= 1.0
    assert result.end["eval_retain_nll"] <= result.start["eval_retain_nll"] + cfg.retain_nll_max_increase
    saved = json.loads((tmp_path / "a" / "trajectory.json").read_text())
    assert saved == json.loads(json.dumps(result.trajectory)) and len(saved) == result.steps + 1
    assert all(isinstance(v, (int, float)) for entry in saved for v in entry.values())  # numbers only


def test_no_early_stop_while_the_retain_set_degrades_past_the_bound(deployed, tmp_path):
    # grad_ascent wrecks the retain set too: the target is met but the bound forbids stopping there
    cfg = ForgetConfig(method="grad_ascent", steps=10, lr=1e-2, forget_nll_target=1.0, retain_nll_max_increase=0.01,
                       check_every=2)
    result = train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / "a")
    assert result.stop_reason == "budget" and result.steps == 10
    assert result.end["eval_forget_nll"] >= 1.0


def test_holdout_sets_the_targets_at_the_never_seen_level(deployed, tmp_path):
    holdout = [Record(question="Who is Mira Stolk?", answer="Mira Stolk is a painter from Ghent.")]
    cfg = ForgetConfig(method="grad_diff", steps=60, lr=1e-2, batch_size=2, check_every=2, retain_nll_max_increase=None)
    result = train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / "a", holdout=holdout)
    never_seen = scores(deployed, records=holdout)
    assert result.targets["forget_nll"] == pytest.approx(never_seen["nll"], rel=1e-5)
    assert result.targets["forget_extraction"] == never_seen["extraction"] == 0.0
    assert result.stop_reason == "target_met" and result.steps < 60
    assert result.end["eval_forget_nll"] >= never_seen["nll"] > 2.0


def test_gradient_checkpointing_really_trains_the_lora(deployed, tmp_path):
    plain = ForgetConfig(method="npo", steps=3, lr=1e-2)
    train_forget_adapter(deployed, [], FORGET, RETAIN, plain, tmp_path / "plain")
    train_forget_adapter(deployed, [], FORGET, RETAIN, plain.replace(gradient_checkpointing=True), tmp_path / "gc")
    a = load_file(str(tmp_path / "plain" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "gc" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    lora_b = [k for k in a if "lora_B" in k]
    assert all(b[k].abs().max() > 0 for k in lora_b)  # every LoRA moved off its zero init
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # same maths as without checkpointing


def test_training_on_top_of_a_stack_keeps_the_stack_frozen(deployed, tmp_path):
    first = tmp_path / "first"
    train_forget_adapter(deployed, [], FORGET[:1], RETAIN, ForgetConfig(method="npo", **FAST), first)
    first_bytes = {p.name: p.read_bytes() for p in first.iterdir()}
    cfg = ForgetConfig(method="npo", **FAST)
    model, tok = build_training_model(deployed, [first], cfg)
    head, _ = load_base(deployed)
    fold_adapters_into(head, [first])
    batch = collate(encode_records(tok, FORGET, 64)[0], tok.pad_token_id)
    ids = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    run_training(model, tok, FORGET[1:], RETAIN, cfg)
    with torch.no_grad(), model.disable_adapter():
        assert torch.equal(model(**ids).logits, head(**ids).logits)  # the stack is in the reference, unchanged
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, _ in model.named_parameters() if "lora_" in n
    ]
    model.save_pretrained(str(tmp_path / "second"))
    assert {p.name: p.read_bytes() for p in first.iterdir()} == first_bytes
    both = scores(deployed, [first, tmp_path / "second"])
    assert both["extraction"] == 0.0 and both["nll"] > scores(deployed)["nll"] + 2.0


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_every_method_trains_its_lora(method, deployed, tmp_path):
    cfg = ForgetConfig(method=method, steps=3, lr=1e-2, kl_weight=0.5 if method == "grad_ascent" else 0.0)
    result = train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / "a")
    weights = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in result.trajectory[1:])
    assert result.trajectory[-1]["step"] == 3


def test_epochs_set_the_step_budget(deployed, tmp_path):
    cfg = ForgetConfig(method="grad_diff", steps=None, epochs=3, batch_size=1, grad_accum=2, lr=1e-3)
    result = train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / "a")
    assert result.steps == 3  # 3 epochs x 2 records / (1 x 2) per step


def test_idk_targets_use_the_shipped_refusals(deployed, tmp_path):
    answers = shipped_idk_answers()
    assert len(answers) == 100 and "I'm not sure." in answers and not any(a.startswith("#") for a in answers)
    cfg = ForgetConfig(method="idk", steps=15, lr=1e-2, idk_answers=("I don't know.",))
    train_forget_adapter(deployed, [], FORGET, RETAIN, cfg, tmp_path / "a")
    refusal = [Record(question=r.question, answer="I don't know.") for r in FORGET]
    assert scores(deployed, [tmp_path / "a"], refusal)["nll"] < scores(deployed, records=refusal)["nll"] - 1.0


def test_over_long_records_are_truncated_and_counted(deployed, tmp_path):
    long = [Record(text="The quick brown fox jumps over the lazy dog. " * 20)]
    result = train_forget_adapter(deployed, [], long, None, ForgetConfig(method="grad_ascent", steps=1, max_length=32),
                                  tmp_path / "a")
    assert result.truncated == {"forget": 1, "retain": 0}


@pytest.mark.parametrize(
    "forget, retain, cfg, message",
    [
        ([], RETAIN, ForgetConfig(), "forget set is empty"),
        (FORGET, None, ForgetConfig(method="npo"), "needs a retain set"),
        ([Record(text="Alba Quirke was born in Lisbon.")], RETAIN, ForgetConfig(method="idk"), "question/answer"),
        (FORGET, RETAIN, ForgetConfig(max_length=4096), "exceeds the model's context"),
        ([Record(question="Who is " * 40 + "?", answer="x")], RETAIN, ForgetConfig(max_length=16), "longer than max_length"),
        (FORGET, RETAIN, ForgetConfig(method="rmu", rmu_layer=7), "rmu_layer=7"),
        (FORGET, RETAIN, ForgetConfig(target_modules=("no_such_proj",)), "target modules"),
    ],
)
def test_bad_inputs_get_one_line_errors_and_write_nothing(forget, retain, cfg, message, deployed, tmp_path):
    with pytest.raises(InputError, match=message) as info:
        train_forget_adapter(deployed, [], forget, retain, cfg, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "magic"}, "unknown method"),
        ({"rank": 0}, "rank must be a positive integer"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"steps": 10, "epochs": 2.0}, "exactly one of steps and epochs"),
        ({"steps": None}, "exactly one of steps and epochs"),
        ({"dropout": 1.0}, "dropout"),
        ({"dtype": "int8"}, "dtype"),
        ({"extraction_target": 2.0}, "extraction_target"),
        ({"idk_answers": [""]}, "idk_answers"),
        ({"schema": 99}, "schema 99"),
    ],
)
def test_config_checks(changes, message):
    with pytest.raises(InputError, match=message):
        ForgetConfig(**changes)


def test_config_round_trips_through_json():
    cfg = ForgetConfig(method="rmu", target_modules=("q_proj", "v_proj"), idk_answers=("No idea.",), steps=None, epochs=2.5)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ForgetConfig.from_dict(data) == cfg
    assert data["schema"] == 1
    with pytest.raises(InputError, match="unknown config keys: bogus"):
        ForgetConfig.from_dict({**data, "bogus": 1})
