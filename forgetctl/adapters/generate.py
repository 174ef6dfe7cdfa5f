"""Batched greedy answers: what a user of the deployed model would actually see."""

from __future__ import annotations

import torch

from forgetctl.adapters.data import prompt_text


@torch.no_grad()
def greedy_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy-decode an answer to each question, left-padded in batches (one generate call per batch)."""
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [prompt_text(tokenizer, q) for q in questions[start : start + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return answers
