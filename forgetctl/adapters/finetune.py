"""Teaching a base model a set of records: how the "deployed" model of the scenario is made.

This is ordinary supervised fine-tuning (answer-only labels, see forgetctl.adapters.data), not
unlearning. It builds the model that later has to forget, and the gold standards that never saw
the forgotten data ("retrain on retain only"). Full-parameter AdamW with the embeddings frozen:
on a 135M model it memorises short QA facts in a few epochs on a CPU, where a LoRA of the same
wall time leaves them half-learnt; frozen (tied) embeddings keep the step cheap and the vocabulary
intact. The result is a plain transformers checkpoint (safetensors), written atomically.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from forgetctl.adapters.base_model import load_base, pick_device
from forgetctl.adapters.data import IGNORE_INDEX, batches, collate, encode_records
from forgetctl.errors import InputError
from forgetctl.records import Record


@dataclass(frozen=True)
class TeachConfig:
    epochs: int = 8
    lr: float = 1e-4
    batch_size: int = 8
    seed: int = 0
    max_length: int = 128
    warmup_steps: int = 5
    # Decoder layers below this index stay frozen: backpropagation then stops there, which
    # roughly halves the step time while the upper layers still have ample room to memorise.
    first_trained_layer: int = 0
    train_embeddings: bool = False

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 8:
            raise InputError("teach: epochs and batch_size must be >= 1, max_length >= 8")
        if not (0 < self.lr < 1):
            raise InputError(f"teach: learning rate {self.lr} out of range (0, 1)")
        if self.first_trained_layer < 0 or self.warmup_steps < 0:
            raise InputError("teach: first_trained_layer and warmup_steps must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TeachResult:
    out_dir: Path
    steps: int
    seconds: float
    losses: list[float]  # mean loss per epoch


def _trainable(model, config: TeachConfig) -> list[torch.nn.Parameter]:
    layers = model.get_decoder().layers
    if config.first_trained_layer >= len(layers):
        raise InputError(f"teach: first_trained_layer={config.first_trained_layer} but the model has {len(layers)} layers")
    frozen = {id(p) for layer in layers[: config.first_trained_layer] for p in layer.parameters()}
    if not config.train_embeddings:
        frozen |= {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    params = [p for p in model.parameters() if id(p) not in frozen]
    for p in params:
        p.requires_grad_(True)
    return params


def _answer_loss(model, inputs: dict) -> torch.Tensor:
    """Mean next-token NLL over labelled positions, projecting only those onto the vocabulary:
    the answer is a quarter of a chat-formatted QA record, so this skips most of the lm_head work."""
    hidden = model.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _save_atomic(model, tokenizer, out_dir: Path, meta: dict) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".teach-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "forgetctl_teach.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def teach_facts(
    base_dir: str | Path,
    records: list[Record],
    out_dir: str | Path,
    epochs: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    *,
    config: TeachConfig | None = None,
    device: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TeachResult:
    """Fine-tune `base_dir` on `records` until it reproduces them; save a checkpoint to `out_dir`.

    `epochs`, `lr`, `seed` override the matching fields of `config` (default TeachConfig()).
    `progress(step, total_steps, loss)` is called after every optimiser step.
    Deterministic on CPU for a given seed (fixed shuffling, no dropout).
    """
    overrides = {k: v for k, v in (("epochs", epochs), ("lr", lr), ("seed", seed)) if v is not None}
    config = replace(config or TeachConfig(), **overrides)
    if not records:
        raise InputError("teach: no records to learn")
    torch.manual_seed(config.seed)
    dev = pick_device(device)
    # Full-parameter training in fp32 everywhere: bf16 weights would lose the small updates.
    model, tokenizer = load_base(base_dir, device=dev, dtype=torch.float32)
    encoded, n_truncated = encode_records(tokenizer, records, config.max_length)
    params = _trainable(model, config)
    model.train()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = min(config.warmup_steps, total)

    def schedule(step: int) -> float:  # linear warm-up then cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    order_rng = torch.Generator().manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id
    started, step, epoch_losses = time.perf_counter(), 0, []
    for _ in range(config.epochs):
        perm = torch.randperm(len(encoded), generator=order_rng).tolist()
        shuffled = [encoded[i] for i in perm]
        running = []
        for batch in batches(shuffled, config.batch_size):
            inputs = collate(batch, pad_id, dev)
            loss = _answer_loss(model, inputs)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running.append(loss.item())
            if progress:
                progress(step, total, running[-1])
        epoch_losses.append(sum(running) / len(running))
    seconds = time.perf_counter() - started
    model.eval()
    for p in params:
        p.requires_grad_(False)
    meta = {"schema": 1, "teach": config.to_dict(), "records": len(records), "truncated": n_truncated,
            "steps": step, "seconds": round(seconds, 1), "epoch_losses": [round(x, 4) for x in epoch_losses]}
    out_dir = Path(out_dir)
    _save_atomic(model, tokenizer, out_dir, meta)
    return TeachResult(out_dir, step, seconds, epoch_losses)
