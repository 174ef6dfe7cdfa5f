"""The method table: each unlearning method is an Objective row saying which inputs it needs
and how its loss is put together from the pure functions in losses.py.

The trainer reads `needs` to decide which forward passes to run; it never looks at method names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from forgetctl.adapters.objectives import losses

if TYPE_CHECKING:
    from forgetctl.adapters.config import ForgetConfig

# What an objective may ask the trainer for:
RETAIN = "retain"  # a retain batch through the trained model
REF_FORGET = "ref_forget"  # the forget batch through the reference (adapter disabled, no grad)
REF_RETAIN = "ref_retain"  # the retain batch through the reference
HIDDEN = "hidden"  # hidden states at the chosen layer for every pass
IDK_TARGETS = "idk_targets"  # forget questions paired with refusal answers instead of the real ones
QA_ONLY = "qa_only"  # forget records must be question/answer pairs


@dataclass
class Forward:
    """One batch through one model variant."""

    logits: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    hidden: torch.Tensor | None = None


@dataclass
class Inputs:
    forget: Forward
    retain: Forward | None = None
    ref_forget: Forward | None = None
    ref_retain: Forward | None = None
    state: dict = field(default_factory=dict)  # from Objective.prepare (e.g. RMU's control vector)


@dataclass(frozen=True)
class Objective:
    name: str
    summary: str
    loss: Callable[[Inputs, ForgetConfig], dict[str, torch.Tensor]]  # returns {"loss": ..., other terms...}
    needs: frozenset[str] = frozenset()
    prepare: Callable[[int, ForgetConfig, torch.Generator], dict] | None = None  # (hidden_size, cfg, rng) -> state


def _retain_nll(inputs: Inputs) -> torch.Tensor:
    return losses.sequence_nll(inputs.retain.logits, inputs.retain.labels).mean()


def _grad_ascent(inputs, cfg):
    nll = losses.sequence_nll(inputs.forget.logits, inputs.forget.labels)
    return {"loss": losses.grad_ascent(nll), "forget_nll": nll.mean()}


def _grad_diff(inputs, cfg):
    nll = losses.sequence_nll(inputs.forget.logits, inputs.forget.labels)
    retain = losses.sequence_nll(inputs.retain.logits, inputs.retain.labels)
    return {"loss": losses.grad_diff(nll, retain, cfg.retain_weight), "forget_nll": nll.mean(), "retain_nll": retain.mean()}


def _npo(inputs, cfg):
    nll_sum = losses.sequence_nll(inputs.forget.logits, inputs.forget.labels, reduction="sum")
    ref_sum = losses.sequence_nll(inputs.ref_forget.logits, inputs.ref_forget.labels, reduction="sum")
    forget = losses.npo(nll_sum, ref_sum, cfg.npo_beta)
    retain = _retain_nll(inputs)
    return {"loss": forget + cfg.retain_weight * retain, "npo": forget, "retain_nll": retain}


def _simnpo(inputs, cfg):
    nll = losses.sequence_nll(inputs.forget.logits, inputs.forget.labels)
    forget = losses.simnpo(nll, cfg.simnpo_beta, cfg.simnpo_gamma)
    retain = _retain_nll(inputs)
    return {"loss": forget + cfg.retain_weight * retain, "simnpo": forget, "retain_nll": retain}


def _idk(inputs, cfg):
    idk_nll = losses.sequence_nll(inputs.forget.logits, inputs.forget.labels).mean()
    retain = _retain_nll(inputs)
    return {"loss": idk_nll + cfg.retain_weight * retain, "idk_nll": idk_nll, "retain_nll": retain}


def _rmu_prepare(hidden_size: int, cfg, rng: torch.Generator) -> dict:
    u = torch.rand(hidden_size, generator=rng)
    return {"control": cfg.rmu_steering_coeff * u / u.norm()}


def _rmu(inputs, cfg):
    control = inputs.state["control"].to(inputs.forget.hidden.device)
    forget, retain = losses.rmu(
        inputs.forget.hidden,
        inputs.forget.attention_mask,
        control,
        inputs.retain.hidden,
        inputs.ref_retain.hidden,
        inputs.retain.attention_mask,
        cfg.rmu_alpha,
    )
    return {"loss": forget + retain, "rmu_forget": forget, "rmu_retain": retain}


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("grad_ascent", "gradient ascent on the forget set (no retain term; collapses quickly)", _grad_ascent),
        Objective("grad_diff", "ascent on forget + retain_weight * NLL on retain", _grad_diff, frozenset({RETAIN})),
        Objective(
            "npo",
            "negative preference optimisation against the adapter-off reference + retain NLL",
            _npo,
            frozenset({RETAIN, REF_FORGET}),
        ),
        Objective("simnpo", "reference-free, length-normalised NPO (beta, gamma) + retain NLL", _simnpo, frozenset({RETAIN})),
        Objective(
            "idk",
            "train forget questions towards refusals ('I don't know') + retain NLL",
            _idk,
            frozenset({RETAIN, IDK_TARGETS, QA_ONLY}),
        ),
        Objective(
            "rmu",
            "representation misdirection: forget activations at rmu_layer -> scaled random vector; retain ones kept",
            _rmu,
            frozenset({RETAIN, REF_RETAIN, HIDDEN}),
            prepare=_rmu_prepare,
        ),
    )
}


def required_inputs(objective: Objective, cfg: ForgetConfig) -> frozenset[str]:
    """What the trainer must compute: the objective's needs plus the optional KL regulariser's."""
    extra = {RETAIN, REF_RETAIN} if cfg.kl_weight > 0 else set()
    return objective.needs | extra


def total_loss(objective: Objective, inputs: Inputs, cfg: ForgetConfig) -> dict[str, torch.Tensor]:
    """The objective's terms, plus kl_weight * KL(reference || model) on retain when enabled."""
    terms = objective.loss(inputs, cfg)
    if cfg.kl_weight > 0:
        kl = losses.kl_to_reference(inputs.retain.logits, inputs.ref_retain.logits, inputs.retain.labels)
        terms = {**terms, "loss": terms["loss"] + cfg.kl_weight * kl, "retain_kl": kl}
    return terms
