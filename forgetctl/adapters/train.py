"""Training one forget adapter: a fresh LoRA on top of the frozen base (+ the HEAD stack folded in).

The reference model that NPO/KL/RMU compare against is the same model with the new adapter
switched off (`model.disable_adapter()`): exactly the HEAD state, with no second copy of the weights.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
from peft import LoraConfig, get_peft_model

from forgetctl.adapters import objectives as obj
from forgetctl.adapters.base_model import default_dtype, load_base, pick_device
from forgetctl.adapters.config import ForgetConfig
from forgetctl.adapters.data import Encoded, collate, encode_record, encode_records
from forgetctl.adapters.lora_delta import fold_adapters_into
from forgetctl.adapters.objectives.losses import sequence_nll, verbatim_match
from forgetctl.errors import ForgetctlError, InputError
from forgetctl.records import Record

ProgressFn = Callable[[int, int, dict], None]  # (step, total_steps, numeric terms of that step)

# Stop checks run often, so they look at a bounded, fixed (seeded) sample of each set.
CHECK_MAX_FORGET = 512
CHECK_MAX_RETAIN = 128


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    stop_reason: str  # "budget" | "target_met"
    trajectory: list[dict[str, float]]
    seconds: float
    device: str = "cpu"
    dtype: str = "float32"
    start: dict[str, float] = field(default_factory=dict)  # check metrics before the first step
    end: dict[str, float] = field(default_factory=dict)  # and after the last
    targets: dict[str, float] = field(default_factory=dict)  # the stop targets in force (resolved)
    truncated: dict[str, int] = field(default_factory=dict)  # records cut to max_length, per set


def shipped_idk_answers() -> tuple[str, ...]:
    text = resources.files("forgetctl.data").joinpath("idk.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def resolve_dtype(config: ForgetConfig, device: torch.device) -> torch.dtype:
    return default_dtype(device) if config.dtype == "auto" else getattr(torch, config.dtype)


def build_training_model(base_dir, stack_dirs, config: ForgetConfig):
    """Base (frozen) + stack folded into its weights + a fresh trainable LoRA. Returns (peft_model, tokenizer)."""
    device = pick_device(config.device)
    model, tokenizer = load_base(base_dir, device, resolve_dtype(config, device))
    fold_adapters_into(model, [Path(d) for d in stack_dirs])
    if config.max_length > getattr(model.config, "max_position_embeddings", config.max_length):
        raise InputError(f"max_length={config.max_length} exceeds the model's context ({model.config.max_position_embeddings})")
    torch.manual_seed(config.seed)  # LoRA A init and dropout draw from the global generator
    targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
        bias="none", task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft reads a property transformers 5 renamed: noise, not a problem of ours
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, lora)
    except ValueError as exc:  # peft: target modules not found in the base model
        raise InputError(f"LoRA target modules: {' '.join(str(exc).split())}") from None
    if config.gradient_checkpointing:
        # Reentrant checkpointing only backpropagates into LoRA weights if the block inputs require grad.
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        peft_model.enable_input_require_grads()
        peft_model.config.use_cache = False
    return peft_model, tokenizer


class _HiddenCapture:
    """Forward hook keeping the output of one decoder layer (RMU)."""

    def __init__(self, model, layer: int | None):
        layers = [m for name, m in model.named_modules() if name.rsplit(".", 2)[-2:-1] == ["layers"] and name.rsplit(".", 1)[-1].isdigit()]
        if not layers:
            raise InputError("cannot find the model's decoder layers for hidden-state objectives")
        self.layer = len(layers) // 2 if layer is None else layer
        if self.layer >= len(layers):
            raise InputError(f"rmu_layer={self.layer} but the model has {len(layers)} layers")
        self.value = None
        self.handle = layers[self.layer].register_forward_hook(self._hook)
        self.hidden_size = model.config.hidden_size

    def _hook(self, module, args, output):
        self.value = output[0] if isinstance(output, tuple) else output

    def take(self):
        value, self.value = self.value, None
        return value


class _Batches:
    """Endless seeded shuffles of a set, cut into batches."""

    def __init__(self, n: int, batch_size: int, rng: torch.Generator):
        self.n, self.size, self.rng, self.queue = n, min(batch_size, n), rng, []

    def next(self) -> list[int]:
        while len(self.queue) < self.size:
            self.queue += torch.randperm(self.n, generator=self.rng).tolist()
        out, self.queue = self.queue[: self.size], self.queue[self.size :]
        return out


def _forward(model, batch: dict, capture: _HiddenCapture | None) -> obj.Forward:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    hidden = capture.take() if capture else None
    return obj.Forward(out.logits, batch["labels"], batch["attention_mask"], hidden)


@torch.no_grad()
def measure(model, encoded: list[Encoded], pad_id: int, batch_size: int, device) -> dict[str, float]:
    """Mean per-record NLL and verbatim (greedy) reproduction rate of a set."""
    was_training = model.training
    model.eval()
    nll, match = [], []
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        nll.append(sequence_nll(logits, batch["labels"]))
        match.append(verbatim_match(logits, batch["labels"]))
    model.train(was_training)
    return {"nll": torch.cat(nll).mean().item(), "extraction": torch.cat(match).mean().item()}


def _sample(encoded: list[Encoded], limit: int, seed: int) -> list[Encoded]:
    if len(encoded) <= limit:
        return encoded
    idx = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed))[:limit]
    return [encoded[i] for i in sorted(idx.tolist())]


class _Trainer:
    def __init__(self, model, tokenizer, forget, retain, config: ForgetConfig, holdout=None):
        self.model, self.tok, self.cfg = model, tokenizer, config
        self.objective = obj.OBJECTIVES[config.method]
        self.needs = obj.required_inputs(self.objective, config)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if obj.QA_ONLY in self.needs and not all(r.is_qa for r in forget):
            raise InputError(f"method '{config.method}' needs question/answer forget records, not plain text")
        if obj.RETAIN in self.needs and not retain:
            raise InputError(f"method '{config.method}' needs a retain set (--retain)")
        self.forget = list(forget)
        self.forget_enc, n_forget_cut = encode_records(tokenizer, self.forget, config.max_length)
        self.retain_enc, n_retain_cut = encode_records(tokenizer, list(retain), config.max_length) if retain else ([], 0)
        self.truncated = {"forget": n_forget_cut, "retain": n_retain_cut}
        self.holdout_enc = encode_records(tokenizer, list(holdout), config.max_length)[0] if holdout else []
        self.rng = torch.Generator().manual_seed(config.seed)
        self.forget_batches = _Batches(len(self.forget), config.batch_size, self.rng)
        self.retain_batches = _Batches(len(self.retain_enc), config.batch_size, self.rng) if self.retain_enc else None
        self.idk = config.idk_answers or shipped_idk_answers()
        self.capture = _HiddenCapture(model, config.rmu_layer) if obj.HIDDEN in self.needs else None
        self.state = self.objective.prepare(self.capture.hidden_size, config, self.rng) if self.objective.prepare else {}
        self.check_forget = _sample(self.forget_enc, CHECK_MAX_FORGET, config.seed)
        self.check_retain = _sample(self.retain_enc, CHECK_MAX_RETAIN, config.seed)

    def total_steps(self) -> int:
        if self.cfg.steps is not None:
            return self.cfg.steps
        per_step = self.cfg.batch_size * self.cfg.grad_accum
        return max(1, math.ceil(self.cfg.epochs * len(self.forget) / per_step))

    def _forget_batch(self) -> dict:
        idx = self.forget_batches.next()
        if obj.IDK_TARGETS in self.needs:
            picks = torch.randint(len(self.idk), (len(idx),), generator=self.rng).tolist()
            enc = [encode_record(self.tok, self.forget[i], self.cfg.max_length, answer=self.idk[p]) for i, p in zip(idx, picks)]
        else:
            enc = [self.forget_enc[i] for i in idx]
        return collate(enc, self.pad_id, self.device)

    def _reference(self, batch) -> obj.Forward:
        with torch.no_grad(), self.model.disable_adapter():
            return _forward(self.model, batch, self.capture)

    def micro_step(self) -> dict[str, torch.Tensor]:
        forget = self._forget_batch()
        inputs = obj.Inputs(forget=_forward(self.model, forget, self.capture), state=self.state)
        if obj.REF_FORGET in self.needs:
            inputs.ref_forget = self._reference(forget)
        if obj.RETAIN in self.needs:
            retain = collate([self.retain_enc[i] for i in self.retain_batches.next()], self.pad_id, self.device)
            inputs.retain = _forward(self.model, retain, self.capture)
            if obj.REF_RETAIN in self.needs:
                inputs.ref_retain = self._reference(retain)
        return obj.total_loss(self.objective, inputs, self.cfg)

    def check(self, retain: bool = True) -> dict[str, float]:
        size = self.cfg.batch_size * 4
        forget = measure(self.model, self.check_forget, self.pad_id, size, self.device)
        out = {"eval_forget_nll": forget["nll"], "eval_forget_extraction": forget["extraction"]}
        if retain and self.check_retain:
            measured = measure(self.model, self.check_retain, self.pad_id, size, self.device)
            out.update(eval_retain_nll=measured["nll"], eval_retain_extraction=measured["extraction"])
        return out

    def check_interval(self) -> int:
        """Steps between forget checks. Forgetting can jump past the never-seen level within a few
        steps, so small forget sets are checked every step; larger ones so that a check costs about
        as much as one training step (a step runs ~4 batch-sized passes forward and back)."""
        if self.cfg.check_every is not None:
            return self.cfg.check_every
        per_step = self.cfg.batch_size * self.cfg.grad_accum * 4
        return max(1, math.ceil(len(self.check_forget) / per_step))

    def forget_target_met(self, metrics: dict, targets: dict) -> bool:
        if "forget_nll" in targets and metrics["eval_forget_nll"] < targets["forget_nll"]:
            return False
        return not ("forget_extraction" in targets and metrics["eval_forget_extraction"] > targets["forget_extraction"])

    def resolve_targets(self) -> dict[str, float]:
        """Explicit targets win; otherwise a holdout set (never-seen data) sets them at its own level."""
        targets = {}
        if self.cfg.forget_nll_target is not None:
            targets["forget_nll"] = self.cfg.forget_nll_target
        if self.cfg.extraction_target is not None:
            targets["forget_extraction"] = self.cfg.extraction_target
        if not targets and self.holdout_enc:
            level = measure(self.model, self.holdout_enc, self.pad_id, self.cfg.batch_size * 4, self.device)
            targets = {"forget_nll": level["nll"], "forget_extraction": level["extraction"]}
        return targets

    def retain_within_bound(self, metrics: dict, start: dict) -> bool:
        bound = self.cfg.retain_nll_max_increase
        return bound is None or "eval_retain_nll" not in metrics or metrics["eval_retain_nll"] <= start["eval_retain_nll"] + bound


def run_training(model, tokenizer, forget, retain, config: ForgetConfig, progress: ProgressFn | None = None, holdout=None):
    """Train the model's active LoRA in place. Returns (steps, stop_reason, trajectory, start, end, targets, truncated).

    start/end (forget NLL and verbatim extraction, retain NLL) are measured only when a stop target is in force.
    """
    trainer = _Trainer(model, tokenizer, forget, retain, config, holdout)
    total = trainer.total_steps()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    targets = trainer.resolve_targets()
    interval = trainer.check_interval()
    start = trainer.check() if targets else {}  # checks cost forward passes: only when something is watched
    trajectory = [{"step": 0, **start}] if start else []
    metrics, stop_reason, step = start, "budget", 0
    model.train()
    try:
        for step in range(1, total + 1):
            sums: dict[str, float] = {}
            for _ in range(config.grad_accum):
                terms = trainer.micro_step()
                if not torch.isfinite(terms["loss"]):
                    raise ForgetctlError(f"training diverged (loss is not finite at step {step}); lower the learning rate")
                (terms["loss"] / config.grad_accum).backward()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.item() / config.grad_accum
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            entry = {"step": step, **sums, "grad_norm": grad_norm, "lr": config.lr}
            met = False
            if targets and (step == total or step % interval == 0):
                # the retain set (larger) is measured only where it decides something: at a stop or the end
                metrics = trainer.check(retain=False)
                met = trainer.forget_target_met(metrics, targets)
                if met or step == total:
                    metrics = {**metrics, **trainer.check(retain=True)}
                entry.update(metrics)
            trajectory.append(entry)
            if progress:
                progress(step, total, entry)
            if met and trainer.retain_within_bound(entry, start):
                stop_reason = "target_met"
                break
    finally:
        model.eval()
        if trainer.capture:
            trainer.capture.handle.remove()
    end = {k: v for k, v in metrics.items()}
    return step, stop_reason, trajectory, start, end, targets, trainer.truncated


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def train_forget_adapter(
    base_dir,
    stack_dirs,
    forget: list[Record],
    retain: list[Record] | None,
    config: ForgetConfig,
    out_dir,
    progress: ProgressFn | None = None,
    holdout: list[Record] | None = None,
) -> TrainResult:
    """Train one forget adapter on top of base + stack and save it (safetensors) with trajectory.json in out_dir.

    `holdout` (never-seen records like the forget ones) sets the early-stop targets at its level when the
    config names none: forgetting should reach "never seen", not overshoot it.
    """
    if not forget:
        raise InputError("the forget set is empty")
    began = time.monotonic()
    model, tokenizer = build_training_model(base_dir, stack_dirs, config)
    steps, stop_reason, trajectory, start, end, targets, truncated = run_training(
        model, tokenizer, forget, retain, config, progress, holdout
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    out_dir.joinpath("README.md").unlink(missing_ok=True)  # peft's generic card; the registry writes its own
    _write_json_atomic(out_dir / "trajectory.json", trajectory)
    device = next(model.parameters()).device
    return TrainResult(
        out_dir=out_dir, steps=steps, stop_reason=stop_reason, trajectory=trajectory, seconds=time.monotonic() - began,
        device=device.type, dtype=str(resolve_dtype(config, device)).removeprefix("torch."),
        start=start, end=end, targets=targets, truncated=truncated,
    )
