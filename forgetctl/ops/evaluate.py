"""Evaluation workflows: score a registry composition, compare two, and build the history report.

Only numbers are stored (Registry.add_evaluation) and audited: data enters as file digests and
counts, never text or file names. Torch is imported lazily so the CLI starts fast.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from forgetctl.digests import sha256_file
from forgetctl.errors import IncompatibleError, InputError, NotFoundError
from forgetctl.records import load_records

SET_NAMES = ("forget", "retain", "holdout", "general")


def _open(home):
    from forgetctl.registry import Registry

    return Registry.open(home)


def _raw_objects(path: Path) -> list:
    """The JSON objects of a .json/.jsonl data file (already validated by load_records)."""
    raw = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() == ".txt":
        return []
    try:
        data = json.loads(raw)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        objects = []
        for line in raw.splitlines():
            if line.strip():
                item = json.loads(line)
                objects.extend(item if isinstance(item, list) else [item])
        return objects


def truth_ratio_fields(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(question, paraphrased_answer, perturbed_answers) for every record that has them (TOFU's
    *_perturbed files); empty when the set has none. A set where only some records have them is refused."""
    rows = []
    objects = [o for o in _raw_objects(path) if isinstance(o, dict)]
    for i, obj in enumerate(objects):
        para, pert = obj.get("paraphrased_answer"), obj.get("perturbed_answer")
        if para is None and pert is None:
            continue
        pert = [pert] if isinstance(pert, str) else pert
        if not isinstance(para, str) or not isinstance(pert, list) or not pert or not all(isinstance(p, str) for p in pert):
            raise InputError(f"{Path(path).name}[{i}]: paraphrased_answer must be a string and perturbed_answer a list of strings")
        rows.append((obj.get("question") or obj.get("prompt"), para, tuple(pert)))
    if rows and len(rows) != len(objects):
        raise InputError(f"{Path(path).name}: only {len(rows)} of {len(objects)} records have perturbed answers")
    return rows


def answer_keys(path: Path, count: int) -> list[str | None] | None:
    """Per record, the short `fact` that counts as leaking it (the shipped people data has one),
    or None when the file has no such field."""
    objects = [o for o in _raw_objects(path) if isinstance(o, dict)]
    if len(objects) != count or not any(isinstance(o.get("fact"), str) and o["fact"].strip() for o in objects):
        return None
    return [o["fact"] if isinstance(o.get("fact"), str) and o["fact"].strip() else None for o in objects]


def load_eval_sets(**paths) -> tuple[dict, dict]:
    """Records per set name and the audit-safe description (sha256 and count) of each file."""
    if paths.get("forget") is None:
        raise InputError("evaluation needs a forget set (--forget FILE)")
    sets, described = {}, {}
    for name in SET_NAMES:
        path = paths.get(name)
        if path is None:
            continue
        sets[name] = load_records(path)
        described[name] = {"sha256": sha256_file(path), "count": len(sets[name])}
    return sets, described


def _versions(reg, comp):
    versions = [reg.adapter(aid) for aid in comp.adapters]
    for v in versions:
        if v.base_fingerprint != reg.base.fingerprint:
            raise IncompatibleError(
                f"adapter {v.label} was trained against base {v.base_fingerprint}, this workspace's base is {reg.base.fingerprint}"
            )
    return versions


def evaluate_version(
    home=None,
    ref: str = "HEAD",
    forget=None,
    retain=None,
    holdout=None,
    general=None,
    retain_model=None,
    actor=None,
    *,
    max_length: int = 256,
    batch_size: int = 16,
    generate: bool = True,
    max_new_tokens: int = 32,
    device=None,
    label: str = "eval",
) -> dict:
    """Evaluate composition `ref` (stacked adapters on the pristine base; KL against that base),
    store the numbers with the composition and audit the event."""
    from forgetctl.adapters.base_model import load_base, load_tokenizer, resolve_base
    from forgetctl.adapters.compose import load_stacked
    from forgetctl.adapters.evaluate import TruthRatioItem, evaluate_model, missing_metrics, truth_ratios
    from forgetctl.adapters.metrics import forget_quality
    from forgetctl.registry import validate_name

    validate_name(label, "evaluation label", max_len=64)
    paths = {"forget": forget, "retain": retain, "holdout": holdout, "general": general}
    sets, described = load_eval_sets(**paths)
    items = [TruthRatioItem(q, p, t) for q, p, t in truth_ratio_fields(Path(forget))]
    retain_dir = resolve_base(str(retain_model)) if retain_model is not None else None
    with _open(home) as reg:  # not held open while the model runs
        comp = reg.composition(ref)
        versions = _versions(reg, comp)
        dirs = [reg.adapter_dir(v) for v in versions]
        base_path, base_fp = reg.base.path, reg.base.fingerprint

    model = load_stacked(base_path, dirs, device=device, base_fingerprint=base_fp)
    tokenizer = load_tokenizer(base_path)
    # The stacked model with its adapters switched off is the pristine base: no second copy.
    reference = model.disable_adapter if dirs else None
    opts = dict(max_length=max_length, batch_size=batch_size)
    keys = {name: k for name in sets if (k := answer_keys(Path(paths[name]), len(sets[name]))) is not None}
    metrics = evaluate_model(
        model, tokenizer, sets, reference=reference, generate=generate, max_new_tokens=max_new_tokens,
        answer_keys=keys, **opts
    )
    if not dirs:  # c0 is the base itself: its divergence from the base is zero by definition
        metrics.update({f"{name}_kl": 0.0 for name in sets})
    if items:
        ratios = truth_ratios(model, tokenizer, items, **opts)
        metrics["forget_truth_ratio"] = sum(ratios) / len(ratios)
        if retain_dir is not None:
            del model, reference  # one model in memory at a time
            gold, gold_tokenizer = load_base(retain_dir, device=device)
            metrics["forget_quality"] = forget_quality(ratios, truth_ratios(gold, gold_tokenizer, items, **opts))
    notes = missing_metrics(
        sets, reference_given=True, generate=generate, truth_items=bool(items), retain_model=retain_dir is not None
    )
    inputs = {"composition": comp.id, "data": described, "generate": generate, "max_length": max_length}
    if retain_dir is not None:
        inputs["retain_model"] = _model_digest(retain_dir)
    with _open(home) as reg:
        evaluation = reg.add_evaluation(comp.id, metrics, label, actor=actor)
        reg.audit("evaluate.inputs", inputs, {"evaluation": evaluation.seq, "metrics": len(metrics)}, actor=actor)
    return {
        "composition": comp.label,
        "composition_id": comp.id,
        "adapters": [v.label for v in versions],
        "evaluation": evaluation.seq,
        "label": label,
        "metrics": metrics,
        "notes": notes,
    }


def _model_digest(model_dir: Path) -> str:
    """Fingerprint of the retain model's weights (a path could name the person)."""
    from forgetctl.registry.fingerprint import fingerprint

    return fingerprint(model_dir)


def compare(home, ref_a: str, ref_b: str) -> dict:
    """Side-by-side stored metrics of two compositions (or adapter versions), with b - a.
    The same view as `forgetctl show A B`; refuses when neither side has been evaluated."""
    from forgetctl.registry import views

    with _open(home) as reg:
        result = views.compare(reg, ref_a, ref_b)
    if not result["metrics"]:
        raise NotFoundError(
            f"no stored metrics for {result['left']['label']} or {result['right']['label']}: run `forgetctl eval` first"
        )
    return result


def _sidecar(version) -> dict:
    meta = version.meta or {}
    return {
        "label": version.label, "id": version.id, "request_id": version.request_id, "reason": version.reason,
        "subject": version.subject, "method": version.method, "parent_composition": version.parent_composition,
        "created_at": version.created_at, "stop_reason": meta.get("stop_reason"), "steps": meta.get("steps"),
        "metrics_before": _numbers(meta.get("metrics_before")), "metrics_after": _numbers(meta.get("metrics_after")),
    }


def _numbers(d) -> dict:
    return {k: float(v) for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def collect_history(reg) -> dict:
    """Everything the report shows, as plain JSON-able data: numbers, ids and labels only."""
    labels = {c.id: c.label for c in reg.compositions()}
    adapters = {v.id: v for v in reg.adapters()}
    compositions = []
    for comp in reg.compositions():
        evaluations = sorted(reg.evaluations(comp.id), key=lambda e: e.seq)
        compositions.append({
            "label": comp.label, "id": comp.id, "number": comp.number, "note": comp.note,
            "created_at": comp.created_at, "parent": labels.get(comp.parent),
            "adapters": [adapters[a].label if a in adapters else a[:12] for a in comp.adapters],
            "evaluations": [{"seq": e.seq, "label": e.label, "created_at": e.created_at, "metrics": _numbers(e.metrics)}
                            for e in evaluations],
        })
    moves = [dict(m.to_dict(), **{"from": labels.get(m.from_id), "to": labels.get(m.to_id)})
             for m in reg.pointer_history()]
    base = reg.base
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base": {"spec": base.spec, "fingerprint": base.fingerprint},
        "pointers": {name: labels.get(cid, cid) for name, cid in reg.pointers().items()},
        "compositions": compositions,
        "adapters": [_sidecar(v) for v in reg.adapters()],
        "pointer_moves": moves,
    }


def build_report(home, out_dir, fmt: str = "html") -> dict:
    """Write the history report (HTML, or Markdown + PNGs) and report.json into out_dir."""
    from forgetctl.report import render_report

    if fmt not in ("html", "md"):
        raise InputError(f"unknown report format '{fmt}' (use html or md)")
    with _open(home) as reg:
        data = collect_history(reg)
    files = render_report(data, Path(out_dir), fmt)
    evaluated = sum(1 for c in data["compositions"] if c["evaluations"])
    return {"out_dir": str(Path(out_dir)), "format": fmt, "files": [str(f) for f in files],
            "compositions": len(data["compositions"]), "evaluated": evaluated,
            "adapters": len(data["adapters"]), "pointer_moves": len(data["pointer_moves"])}
