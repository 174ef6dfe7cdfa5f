"""Unlearning losses as small pure functions on tensors (no model, no config).

Conventions: `logits` are (batch, seq, vocab) and `labels` (batch, seq) with -100 where no loss
is taken; position t predicts label t+1 (the usual causal shift). Per-sequence quantities are
(batch,) tensors; every loss returns a scalar to *minimise*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _shift(logits: torch.Tensor, labels: torch.Tensor):
    logits = logits[:, :-1, :].float()
    labels = labels[:, 1:]
    return logits, labels, labels != IGNORE_INDEX


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of each sequence's labelled tokens: (batch,).

    reduction="mean" averages over each sequence's labelled tokens, "sum" adds them
    (= -log p(answer | prompt), what NPO's likelihood ratio is built on).
    """
    logits, labels, mask = _shift(logits, labels)
    token_nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1), reduction="none"
    ).view(labels.shape)
    total = (token_nll * mask).sum(dim=1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum(dim=1).clamp(min=1)
    raise ValueError(f"unknown reduction {reduction!r}")


def verbatim_match(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1.0 for each sequence whose every labelled token is the argmax under teacher forcing, else 0.0.

    That is exactly "greedy decoding from the prompt reproduces the answer verbatim", without generating.
    """
    logits, labels, mask = _shift(logits, labels)
    hit = (logits.argmax(dim=-1) == labels) | ~mask
    return (hit.all(dim=1) & mask.any(dim=1)).float()


def grad_ascent(forget_nll: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: push the forget set's likelihood down without bound."""
    return -forget_nll.mean()


def grad_diff(forget_nll: torch.Tensor, retain_nll: torch.Tensor, retain_weight: float) -> torch.Tensor:
    """Ascent on the forget set, descent on the retain set."""
    return -forget_nll.mean() + retain_weight * retain_nll.mean()


def npo(forget_nll_sum: torch.Tensor, ref_forget_nll_sum: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al. 2024): -2/beta * E[log sigmoid(-beta * log(p/p_ref))].

    With summed NLLs, log(p/p_ref) = ref_nll - nll. The loss saturates once the model is well below the
    reference, which is what keeps NPO from collapsing the way plain ascent does.
    """
    log_ratio = ref_forget_nll_sum - forget_nll_sum
    return -2.0 / beta * F.logsigmoid(-beta * log_ratio).mean()


def simnpo(forget_nll_mean: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): reference-free NPO on the length-normalised likelihood, with margin gamma."""
    return -2.0 / beta * F.logsigmoid(beta * forget_nll_mean - gamma).mean()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labelled positions of KL(reference || model) between next-token distributions."""
    logits, labels, mask = _shift(logits, labels)
    ref = ref_logits[:, :-1, :].float()
    logp, ref_logp = F.log_softmax(logits, dim=-1), F.log_softmax(ref, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def masked_mse(hidden: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per feature, averaged over the real (unpadded) tokens."""
    per_token = ((hidden.float() - target.float()) ** 2).mean(dim=-1)
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def rmu(
    forget_hidden: torch.Tensor,
    forget_mask: torch.Tensor,
    control: torch.Tensor,
    retain_hidden: torch.Tensor,
    ref_retain_hidden: torch.Tensor,
    retain_mask: torch.Tensor,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Representation Misdirection (Li et al. 2024, WMDP): (forget term, retain term).

    Forget: steer the layer's activations on forget tokens towards a fixed scaled random vector `control`.
    Retain: keep them equal to the reference's on retain tokens, weighted by alpha.
    """
    forget = masked_mse(forget_hidden, control.expand_as(forget_hidden), forget_mask)
    retain = alpha * masked_mse(retain_hidden, ref_retain_hidden, retain_mask)
    return forget, retain
