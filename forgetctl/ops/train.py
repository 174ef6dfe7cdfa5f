"""A deletion request end to end: train a forget adapter on top of HEAD, evaluate before and after,
commit to the data, register the adapter, compose HEAD + [new], move HEAD, audit.

Nothing reaches the registry unless training and evaluation succeeded. The records' text is never
logged or stored: the registry gets numbers, a salted commitment and the files' sha256.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from forgetctl import __version__
from forgetctl.digests import sha256_file
from forgetctl.errors import ForgetctlError, IncompatibleError, InputError, NotFoundError
from forgetctl.records import load_records
from forgetctl.registry import REASONS, Registry, commit, validate_name

EVAL_MAX_RECORDS = 100  # per set, seeded sample: before/after evaluation generates text, keep it bounded
SIDECAR_SCHEMA = 1


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sample(records: list, limit: int, seed: int) -> list:
    if len(records) <= limit:
        return records
    return [records[i] for i in sorted(random.Random(seed).sample(range(len(records)), limit))]


def _finite(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")}


def _library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"forgetctl": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def evaluate_stack(base_dir, adapter_dirs, sets: dict, config, base_fingerprint: str) -> dict[str, float]:
    """evaluate_model on base + adapters (each separate and active); KL against the pristine base."""
    from forgetctl.adapters.base_model import load_tokenizer, pick_device
    from forgetctl.adapters.compose import load_stacked
    from forgetctl.adapters.evaluate import evaluate_model
    from forgetctl.adapters.train import resolve_dtype

    device = pick_device(config.device)
    model = load_stacked(base_dir, adapter_dirs, device=device, dtype=resolve_dtype(config, device), base_fingerprint=base_fingerprint)
    reference = model.disable_adapter if adapter_dirs else None  # the same weights, adapters off: no second copy
    metrics = evaluate_model(
        model, load_tokenizer(base_dir), sets, reference=reference, max_length=config.max_length,
        batch_size=max(config.batch_size, 8),
    )
    if not adapter_dirs:  # the pristine base diverges from itself by nothing
        metrics.update({f"{name}_kl": 0.0 for name in sets})
    return metrics


def _head_state(reg: Registry):
    head = reg.head()
    versions = [reg.adapter(a) for a in head.adapters]
    for v in versions:
        if v.base_fingerprint != reg.base.fingerprint:
            raise IncompatibleError(f"HEAD adapter {v.label} was trained against another base ({v.base_fingerprint})")
    return head, [reg.adapter_dir(v) for v in versions]


def _refuse_duplicate(reg: Registry, request_id: str) -> None:
    try:
        existing = reg.adapter(request_id)
    except NotFoundError:
        return
    if existing.request_id == request_id:
        raise InputError(f"request {request_id!r} already has adapter {existing.label}; use a new request id")


def _warnings(result, config) -> list[str]:
    return [
        f"{n} {name} record(s) longer than max_length={config.max_length} tokens were truncated"
        for name, n in result.truncated.items()
        if n
    ]


def train_request(
    home,
    request_id: str,
    forget_path,
    retain_path=None,
    config=None,
    reason: str = "other",
    subject: str | None = None,
    holdout_path=None,
    progress=None,
    actor=None,
    *,
    evaluate: bool = True,
) -> dict:
    """Train, evaluate, register and compose one forget adapter for `request_id`; returns a summary dict."""
    from forgetctl.adapters.config import ForgetConfig
    from forgetctl.adapters.train import train_forget_adapter

    config = config or ForgetConfig()
    validate_name(request_id, "request id")
    if reason not in REASONS:
        raise InputError(f"reason must be one of {', '.join(REASONS)}, got {str(reason)[:40]!r}")
    if subject:
        validate_name(subject, "subject label")
    paths = {"forget": forget_path, "retain": retain_path, "holdout": holdout_path}
    paths = {name: Path(p) for name, p in paths.items() if p is not None}
    data = {name: load_records(p) for name, p in paths.items()}  # all input errors before any work

    with Registry.open(home) as reg:
        _refuse_duplicate(reg, request_id)
        head, stack = _head_state(reg)
        base_dir, base_fp = Path(reg.base.path), reg.base.fingerprint
        commitment = commit(request_id, [r.canonical_bytes() for r in data["forget"]], reg.secret())

    eval_sets = {name: _sample(records, EVAL_MAX_RECORDS, config.seed) for name, records in data.items()}
    work = Path(tempfile.mkdtemp(prefix="forgetctl-train-"))
    try:
        started = _now()
        before = evaluate_stack(base_dir, stack, eval_sets, config, base_fp) if evaluate else {}
        result = train_forget_adapter(
            base_dir, stack, data["forget"], data.get("retain"), config, work / "adapter", progress, data.get("holdout")
        )
        after = evaluate_stack(base_dir, [*stack, work / "adapter"], eval_sets, config, base_fp) if evaluate else {}
        meta = {
            "schema": SIDECAR_SCHEMA, "request_id": request_id, "reason": reason, "subject": subject or "",
            "method": config.method, "hyperparameters": config.to_dict(), "base_fingerprint": base_fp,
            "parent_composition": head.id, "metrics_before": _finite(before), "metrics_after": _finite(after),
            "stop_reason": result.stop_reason, "steps": result.steps, "device": result.device, "dtype": result.dtype,
            "started_at": started, "finished_at": _now(), "versions": _library_versions(),
            "commitment": commitment.to_dict(), "data_sha256": {name: sha256_file(p) for name, p in paths.items()},
            "training": {
                "seconds": round(result.seconds, 3), "start": _finite(result.start), "end": _finite(result.end),
                "targets": _finite(result.targets), "truncated": result.truncated,
                "records": {name: len(records) for name, records in data.items()},
            },
        }
        with Registry.open(home) as reg:
            now_head = reg.head()
            if now_head.id != head.id:
                raise ForgetctlError(
                    f"HEAD moved from {head.label} to {now_head.label} while training; nothing was registered: train again"
                )
            version = reg.register_adapter(work / "adapter", meta, commitment, actor=actor)
            comp = reg.compose([*head.adapters, version.id], parent=head.id, note=f"train {request_id}", actor=actor)
            reg.move_pointer("HEAD", comp.id, actor=actor, action="train")
            if meta["metrics_before"]:
                reg.add_evaluation(head.id, meta["metrics_before"], "train-before", actor=actor)
            if meta["metrics_after"]:
                reg.add_evaluation(comp.id, meta["metrics_after"], "train-after", actor=actor)
            reg.audit(
                "train",
                {"request_id": request_id, "reason": reason, "method": config.method, "parent": head.id,
                 "data_sha256": meta["data_sha256"], "commitment_root": commitment.root},
                {"adapter_id": version.id, "version": version.label, "composition": comp.id,
                 "stop_reason": result.stop_reason, "steps": result.steps},
                actor=actor,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "request_id": request_id, "version": version.label, "adapter_id": version.id,
        "composition": comp.label, "composition_id": comp.id, "parent": head.label, "method": config.method,
        "stop_reason": result.stop_reason, "steps": result.steps, "seconds": round(result.seconds, 3),
        "device": result.device, "dtype": result.dtype, "metrics_before": meta["metrics_before"],
        "metrics_after": meta["metrics_after"], "training": meta["training"], "warnings": _warnings(result, config),
    }
