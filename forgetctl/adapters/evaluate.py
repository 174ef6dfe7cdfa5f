"""Batched evaluation of a model on named record sets: forgetting, leakage and utility.

One forward pass per batch (right-padded) gives every teacher-forced score; one `generate`
call per batch (left-padded) gives the greedy continuations. No model call per record.
Returns a flat dict of numbers, keys `<set>_<metric>`; see `METRIC_DOC` for their meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from forgetctl.adapters import metrics as M
from forgetctl.adapters.data import IGNORE_INDEX, Encoded, collate, encode_record, prompt_text
from forgetctl.errors import InputError
from forgetctl.records import Record

MIN_K = 0.2

METRIC_DOC = {
    "nll": "mean per-record NLL of the answer (QA) or text tokens",
    "answer_prob": "mean of exp(-NLL): length-normalised probability of the answer",
    "ppl": "perplexity: exp of the token-weighted mean NLL",
    "exact_mem": "share of answer tokens whose teacher-forced argmax is correct",
    "rougeL_recall": "ROUGE-L recall of the greedy continuation against the true one",
    "exact_answer_rate": "share of records whose normalised answer (or key fact) appears in the greedy output",
    "kl": "mean KL(reference || model) of next-token distributions over the scored tokens",
    "count": "number of records",
    "truncated": "records cut at max_length",
    "truth_ratio": "TOFU truth ratio, mean over records (perturbed / paraphrased probability)",
    "forget_quality": "KS-test p-value of truth ratios against a model never trained on the forget set",
}

MIA_ATTACKS = ("loss", "zlib", "mink", "minkpp")


@dataclass(frozen=True)
class TruthRatioItem:
    """A question with a paraphrased right answer and perturbed wrong answers (TOFU style)."""

    question: str
    paraphrased_answer: str
    perturbed_answers: tuple[str, ...]

    def __post_init__(self):
        if not self.question or not self.paraphrased_answer or not self.perturbed_answers:
            raise InputError("a truth-ratio item needs a question, a paraphrased answer and perturbed answers")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise InputError("the tokenizer has neither a pad nor an eos token")
    return pad


def _logits(model, batch, reference=None):
    """Logits of `model`, or of the reference: a separate model, or a context-manager factory
    (e.g. PeftModel.disable_adapter) under which `model` itself gives the reference."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if reference is None:
        return model(**inputs).logits
    if isinstance(reference, torch.nn.Module):
        return reference(**inputs).logits
    with reference():
        return model(**inputs).logits


def _scored_rows(logits, labels):
    """Yield (row logits (n, V), targets (n,)) restricted to the scored positions of each row."""
    shifted_logits, targets = M.next_token(logits, labels)
    for row_logits, row_targets in zip(shifted_logits, targets):
        keep = row_targets != IGNORE_INDEX
        yield row_logits[keep].unsqueeze(0).float(), row_targets[keep].unsqueeze(0), keep


def _sorted_batches(encoded: list[Encoded], batch_size: int):
    """Batches of indices grouped by length (less padding); callers restore the order."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def score_records(model, tokenizer, encoded: list[Encoded], *, reference=None, batch_size=16, full=True) -> list[dict]:
    """Teacher-forced per-record scores: nll, n_tokens, and when `full` exact_mem, mink, minkpp
    (and kl when a reference is given)."""
    device, pad = _device(model), _pad_id(tokenizer)
    results: list[dict | None] = [None] * len(encoded)
    for idx in _sorted_batches(encoded, batch_size):
        batch = collate([encoded[i] for i in idx], pad, device)
        logits = _logits(model, batch)
        ref_rows = None
        if reference is not None and full:
            ref_rows = list(_scored_rows(_logits(model, batch, reference), batch["labels"]))
        for j, (row_logits, targets, _) in enumerate(_scored_rows(logits, batch["labels"])):
            nll = M.mean_nll(row_logits, targets)[0].item()
            out = {"nll": nll, "n_tokens": int(targets.numel())}
            if full:
                out["exact_mem"] = M.exact_memorization(row_logits, targets)[0].item()
                out["mink"] = M.min_k_prob(row_logits, targets, MIN_K)[0].item()
                out["minkpp"] = M.min_k_plus_plus(row_logits, targets, MIN_K)[0].item()
                if ref_rows is not None:
                    mask = torch.ones_like(targets, dtype=torch.bool)
                    out["kl"] = M.kl_divergence(ref_rows[j][0], row_logits, mask)[0].item()
            results[idx[j]] = out
    return results


def _generation_prompt(tokenizer, record: Record, enc: Encoded, max_new_tokens: int) -> tuple[list[int], str]:
    """(prompt ids, true continuation): the question for QA, the first half of a text."""
    if record.is_qa:
        ids = tokenizer(prompt_text(tokenizer, record.question), add_special_tokens=False)["input_ids"]
        return ids, record.answer
    ids = enc.input_ids
    cut = max(1, len(ids) // 2)
    continuation = tokenizer.decode(ids[cut : cut + max_new_tokens], skip_special_tokens=True)
    return ids[:cut], continuation


@torch.inference_mode()
def greedy_continuations(model, tokenizer, prompts: list[list[int]], *, max_new_tokens=32, batch_size=16) -> list[str]:
    """Greedy continuation of each prompt, batched with left padding; text up to the first eos."""
    device, pad, eos = _device(model), _pad_id(tokenizer), tokenizer.eos_token_id
    outputs: list[str | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        for row, i in enumerate(idx):
            new = generated[row, width:].tolist()
            if eos is not None and eos in new:
                new = new[: new.index(eos)]
            outputs[i] = tokenizer.decode(new, skip_special_tokens=True)
    return outputs


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def _scored_text(record: Record) -> str:
    return record.answer if record.is_qa else record.text


def _membership_scores(record: Record, score: dict) -> dict[str, float]:
    """Per attack, a score where higher = looks more like training data."""
    return {
        "loss": -score["nll"],
        "zlib": -M.zlib_ratio(score["nll"], _scored_text(record)),
        "mink": score["mink"],
        "minkpp": score["minkpp"],
    }


def _set_metrics(name, records, encoded, scores, generations, reference_given) -> dict[str, float]:
    out: dict[str, float | None] = {
        f"{name}_count": float(len(records)),
        f"{name}_truncated": float(sum(e.truncated for e in encoded)),
        f"{name}_nll": _mean(s["nll"] for s in scores),
        f"{name}_answer_prob": _mean(M.answer_probability(s["nll"]) for s in scores if not math.isnan(s["nll"])),
        f"{name}_exact_mem": _mean(s["exact_mem"] for s in scores),
    }
    tokens = sum(s["n_tokens"] for s in scores)
    if tokens:
        mean_token_nll = sum(s["nll"] * s["n_tokens"] for s in scores if s["n_tokens"]) / tokens
        out[f"{name}_ppl"] = math.exp(mean_token_nll) if mean_token_nll < 700 else None  # beyond float range
    if reference_given:
        out[f"{name}_kl"] = _mean(s["kl"] for s in scores)
    if generations is not None:
        out[f"{name}_rougeL_recall"] = _mean(M.rouge_l_recall(g, ref) for g, ref, _ in generations)
        out[f"{name}_exact_answer_rate"] = _mean(float(M.contains_answer(g, key)) for g, _, key in generations)
    return {k: float(v) for k, v in out.items() if v is not None}


def evaluate_model(
    model,
    tokenizer,
    sets: dict[str, list[Record]],
    *,
    reference=None,
    max_length: int = 256,
    batch_size: int = 16,
    generate: bool = True,
    max_new_tokens: int = 32,
    answer_keys: dict[str, list[str | None]] | None = None,
) -> dict[str, float]:
    """Evaluate `model` on named sets (forget, retain, holdout, general, ...).

    `reference`: the model to measure KL against: a separate model, or a context-manager
    factory such as `peft_model.disable_adapter` (the base, no second copy). MIA AUCs
    (`mia_<attack>_auc`) need both `forget` (members) and `holdout` (non-members).
    `answer_keys[set][i]`: the short fact that counts as a leak for record i (e.g. "Kraków" for
    "X was born in Kraków."); without one, the whole answer must appear (exact-answer rate).
    """
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    membership: dict[str, list[dict[str, float]]] = {}
    try:
        for name, records in sets.items():
            if not records:
                raise InputError(f"the {name} set is empty")
            encoded = [encode_record(tokenizer, r, max_length) for r in records]
            scores = score_records(model, tokenizer, encoded, reference=reference, batch_size=batch_size)
            generations = None
            if generate:
                pairs = [_generation_prompt(tokenizer, r, e, max_new_tokens) for r, e in zip(records, encoded)]
                outputs = greedy_continuations(
                    model, tokenizer, [p for p, _ in pairs], max_new_tokens=max_new_tokens, batch_size=batch_size
                )
                keys = (answer_keys or {}).get(name) or [None] * len(records)
                if len(keys) != len(records):
                    raise InputError(f"answer_keys for {name}: {len(keys)} keys for {len(records)} records")
                generations = [(out, ref, key or ref) for out, (_, ref), key in zip(outputs, pairs, keys)
                               if M.text_tokens(ref)]
            metrics.update(_set_metrics(name, records, encoded, scores, generations, reference is not None))
            membership[name] = [_membership_scores(r, s) for r, s in zip(records, scores) if not math.isnan(s["nll"])]
    finally:
        model.train(was_training)
    if membership.get("forget") and membership.get("holdout"):
        for attack in MIA_ATTACKS:
            members = [s[attack] for s in membership["forget"]]
            others = [s[attack] for s in membership["holdout"]]
            metrics[f"mia_{attack}_auc"] = M.roc_auc(members, others)
    return metrics


def truth_ratios(model, tokenizer, items: list[TruthRatioItem], *, max_length=256, batch_size=16) -> list[float]:
    """Per-item TOFU truth ratio, all answers scored in shared batches."""
    records, spans = [], []
    for item in items:
        start = len(records)
        records.append(Record(question=item.question, answer=item.paraphrased_answer))
        records.extend(Record(question=item.question, answer=a) for a in item.perturbed_answers)
        spans.append((start, len(records)))
    encoded = [encode_record(tokenizer, r, max_length) for r in records]
    was_training = model.training
    model.eval()
    try:
        nlls = [s["nll"] for s in score_records(model, tokenizer, encoded, batch_size=batch_size, full=False)]
    finally:
        model.train(was_training)
    return [M.truth_ratio(nlls[a], nlls[a + 1 : b]) for a, b in spans]


def missing_metrics(set_names, *, reference_given: bool, generate: bool, truth_items: bool, retain_model: bool) -> list[str]:
    """Plain-language notes on what could not be computed and why (never a made-up number)."""
    names = set(set_names)
    notes = []
    if not {"forget", "holdout"} <= names:
        notes.append("membership-inference AUCs need both a forget set and a holdout set (data the model never saw)")
    if "retain" not in names:
        notes.append("no retain set: utility on neighbouring knowledge not measured")
    if "general" not in names:
        notes.append("no general text set: general perplexity not measured")
    if not reference_given:
        notes.append("no reference model: KL divergence from the base not measured")
    if not generate:
        notes.append("generation disabled: verbatim extraction (ROUGE-L, exact-answer rate) not measured")
    if not truth_items:
        notes.append("forget_quality unavailable: the forget set has no paraphrased_answer/perturbed_answer fields")
    elif not retain_model:
        notes.append("forget_quality unavailable: no retain model (one never trained on the forget set) was given")
    return notes
