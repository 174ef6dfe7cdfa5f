"""Batched evaluation on tiny models: padding must not change any number."""

import math

import pytest
import torch

from forgetctl.adapters import metrics as M
from forgetctl.adapters.data import encode_record, prompt_text
from forgetctl.adapters.evaluate import (
    TruthRatioItem,
    evaluate_model,
    greedy_continuations,
    missing_metrics,
    truth_ratios,
)
from forgetctl.errors import InputError
from forgetctl.records import Record
from tests.tiny import make_model, make_tokenizer

FORGET = [
    Record(question="What is the birthplace of Alba Quirke?", answer="Alba Quirke was born in Lisbon."),
    Record(question="Who is Alba Quirke?", answer="Alba Quirke is a marine biologist."),
    Record(text="The quick brown fox jumps over the lazy dog. 0123456789"),
]
HOLDOUT = [
    Record(question="Who is Tomas Venn?", answer="Tomas Venn is a marine biologist from Oslo."),
    Record(question="What is the birthplace of Tomas Venn?", answer="Tomas Venn was born in Oslo."),
    Record(text="Hello world, this is a tiny tokenizer for tests."),
]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return make_model(tok)


def _manual_nll(model, tok, record):
    """One record, no padding, loss computed directly with cross-entropy."""
    enc = encode_record(tok, record, 256)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    labels = torch.tensor(enc.labels[1:])
    keep = labels != -100
    return torch.nn.functional.cross_entropy(logits[keep], labels[keep]).item()


def test_batched_equals_one_at_a_time(model, tok):
    sets = {"forget": FORGET, "holdout": HOLDOUT}
    batched = evaluate_model(model, tok, sets, reference=make_model(tok, seed=3), batch_size=6, max_new_tokens=6)
    single = evaluate_model(model, tok, sets, reference=make_model(tok, seed=3), batch_size=1, max_new_tokens=6)
    assert batched.keys() == single.keys()
    for key in batched:
        assert batched[key] == pytest.approx(single[key], rel=1e-6, abs=1e-5), key  # ppl = exp(nll) scales float noise
    manual = sum(_manual_nll(model, tok, r) for r in FORGET) / len(FORGET)
    assert batched["forget_nll"] == pytest.approx(manual, abs=1e-5)
    assert batched["forget_answer_prob"] == pytest.approx(
        sum(math.exp(-_manual_nll(model, tok, r)) for r in FORGET) / 3, abs=1e-6
    )


def test_left_padded_generation_matches_unpadded(model, tok):
    prompts = [tok(prompt_text(tok, r.question), add_special_tokens=False)["input_ids"] for r in FORGET[:2] + HOLDOUT[:1]]
    assert len({len(p) for p in prompts}) > 1  # the batch really needs padding
    batched = greedy_continuations(model, tok, prompts, max_new_tokens=8, batch_size=3)
    single = [greedy_continuations(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(s, str) for s in batched)


def test_keys_are_flat_numbers(model, tok):
    result = evaluate_model(model, tok, {"forget": FORGET, "holdout": HOLDOUT, "retain": HOLDOUT[:2]}, max_new_tokens=4)
    for name in ("forget", "holdout", "retain"):
        for metric in ("nll", "answer_prob", "exact_mem", "rougeL_recall", "exact_answer_rate", "ppl", "count"):
            assert f"{name}_{metric}" in result
    for attack in ("loss", "zlib", "mink", "minkpp"):
        assert 0.0 <= result[f"mia_{attack}_auc"] <= 1.0
    assert all(type(v) is float and math.isfinite(v) for v in result.values())
    assert not any(k.endswith("_kl") for k in result)  # no reference given
    only_forget = evaluate_model(model, tok, {"forget": FORGET}, generate=False)
    assert not any(k.startswith("mia_") or "rouge" in k for k in only_forget)


def test_empty_set_is_refused(model, tok):
    with pytest.raises(InputError):
        evaluate_model(model, tok, {"forget": []})


def test_kl_reference_via_disable_adapter_equals_separate_model(tok):
    from peft import LoraConfig, get_peft_model

    base = make_model(tok, seed=5)
    pristine = make_model(tok, seed=5)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_alpha=8))
    zero = evaluate_model(peft_model, tok, {"retain": HOLDOUT}, reference=peft_model.disable_adapter, generate=False)
    assert zero["retain_kl"] == pytest.approx(0.0, abs=1e-7)  # LoRA B starts at zero: same model
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    via_adapter = evaluate_model(peft_model, tok, {"retain": HOLDOUT}, reference=peft_model.disable_adapter, generate=False)
    via_model = evaluate_model(peft_model, tok, {"retain": HOLDOUT}, reference=pristine, generate=False)
    assert via_adapter["retain_kl"] > 1e-4
    assert via_adapter["retain_kl"] == pytest.approx(via_model["retain_kl"], rel=1e-5)
    assert via_adapter["retain_nll"] == via_model["retain_nll"]


def _memorise(tok, records, steps=150):
    """Overfit a tiny model on `records` (teacher forcing) so it answers them verbatim."""
    from forgetctl.adapters.data import collate

    torch.manual_seed(0)
    model = make_model(tok, seed=7).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = collate([encode_record(tok, r, 256) for r in records], tok.pad_token_id)
    for _ in range(steps):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_memorised_facts_are_detected(tok):
    model = _memorise(tok, FORGET[:2])
    result = evaluate_model(model, tok, {"forget": FORGET[:2], "holdout": HOLDOUT[:2]}, max_new_tokens=16)
    assert result["forget_exact_mem"] == pytest.approx(1.0)
    assert result["forget_rougeL_recall"] == pytest.approx(1.0)
    assert result["forget_exact_answer_rate"] == 1.0
    assert result["forget_answer_prob"] > 0.9 > result["holdout_answer_prob"]
    assert result["holdout_exact_answer_rate"] == 0.0
    assert result["mia_loss_auc"] == 1.0  # members are told apart perfectly
    # a key fact counts as a leak on its own; a fact the output lacks does not
    keyed = evaluate_model(model, tok, {"forget": FORGET[:2]}, max_new_tokens=16,
                           answer_keys={"forget": ["Lisbon", "violinist"]})
    assert keyed["forget_exact_answer_rate"] == 0.5
    with pytest.raises(InputError):
        evaluate_model(model, tok, {"forget": FORGET[:2]}, answer_keys={"forget": ["Lisbon"]})


def test_truth_ratios_batched_match_manual(model, tok):
    items = [
        TruthRatioItem("Who is Alba Quirke?", "Alba Quirke studies the sea.", ("Alba Quirke is a baker.", "Alba is a pilot.")),
        TruthRatioItem("Who is Tomas Venn?", "Tomas Venn is a biologist.", ("Tomas Venn is a fox.",)),
    ]
    got = truth_ratios(model, tok, items, batch_size=8)
    for item, value in zip(items, got):
        para = _manual_nll(model, tok, Record(question=item.question, answer=item.paraphrased_answer))
        pert = [_manual_nll(model, tok, Record(question=item.question, answer=a)) for a in item.perturbed_answers]
        assert value == pytest.approx(M.truth_ratio(para, pert), rel=1e-5)


def test_missing_metrics_say_why():
    notes = missing_metrics(["forget"], reference_given=False, generate=True, truth_items=True, retain_model=False)
    text = " ".join(notes)
    assert "holdout" in text and "retain model" in text and "KL" in text
    assert missing_metrics(
        ["forget", "holdout", "retain", "general"], reference_given=True, generate=True, truth_items=True, retain_model=True
    ) == []
