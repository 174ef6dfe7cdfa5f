"""Turning records into padded tensors for training and evaluation.

QA records use the tokenizer's chat template when it has one (the question as the user turn,
the answer as the assistant turn) and only the answer tokens carry labels. Text records are
labelled over their whole length. Over-long records are truncated and counted, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forgetctl.errors import InputError
from forgetctl.records import Record

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken
    prompt_len: int  # tokens before the answer (0 for text records)
    truncated: bool


def prompt_text(tokenizer, question: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return f"Question: {question}\nAnswer: "


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_record(tokenizer, record: Record, max_length: int, answer: str | None = None) -> Encoded:
    """Encode one record. `answer` replaces the record's answer (used for IDK targets)."""
    if record.is_qa:
        prompt = _ids(tokenizer, prompt_text(tokenizer, record.question))
        target = _ids(tokenizer, answer if answer is not None else record.answer)
        if tokenizer.eos_token_id is not None:
            target = target + [tokenizer.eos_token_id]
        if len(prompt) >= max_length:
            raise InputError(f"a question is {len(prompt)} tokens, longer than max_length={max_length}")
        ids = prompt + target
        labels = [IGNORE_INDEX] * len(prompt) + target
        prompt_len = len(prompt)
    else:
        ids = _ids(tokenizer, record.text)
        if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id:
            ids = [tokenizer.bos_token_id] + ids
        labels = list(ids)
        prompt_len = 0
    truncated = len(ids) > max_length
    return Encoded(ids[:max_length], labels[:max_length], prompt_len, truncated)


def encode_records(tokenizer, records: list[Record], max_length: int) -> tuple[list[Encoded], int]:
    """Encode all records; returns (encoded, number truncated)."""
    encoded = [encode_record(tokenizer, r, max_length) for r in records]
    return encoded, sum(e.truncated for e in encoded)


def collate(batch: list[Encoded], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Right-pad a batch into input_ids / attention_mask / labels tensors."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def batches(encoded: list[Encoded], batch_size: int):
    for start in range(0, len(encoded), batch_size):
        yield encoded[start : start + batch_size]
