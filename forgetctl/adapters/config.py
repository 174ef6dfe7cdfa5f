"""ForgetConfig: every knob of one forget-adapter training run, checked on construction.

Stored verbatim (to_dict) in the adapter sidecar, so a version records how it was made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from forgetctl.errors import InputError

SCHEMA_VERSION = 1
DEFAULT_METHOD = "npo"  # best forgetting/utility trade-off on the real model: scripts/compare_methods.py, README
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ForgetConfig:
    method: str = DEFAULT_METHOD
    # LoRA
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"  # peft: every linear layer of attention and MLP, not lm_head
    # optimisation
    lr: float = 2e-4
    steps: int | None = 40  # optimizer updates; None when `epochs` is given
    epochs: float | None = None  # passes over the forget set
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    # objective weights
    retain_weight: float = 1.0
    kl_weight: float = 0.0  # KL(reference || model) on the retain set, added to any method
    npo_beta: float = 0.1
    simnpo_beta: float = 4.5
    simnpo_gamma: float = 0.0
    idk_answers: tuple[str, ...] | None = None  # None: the shipped TOFU refusal list
    rmu_layer: int | None = None  # None: the middle decoder layer
    rmu_steering_coeff: float = 6.5
    rmu_alpha: float = 100.0
    # stopping: early stop once every target set is met while retain stays within its bound
    forget_nll_target: float | None = None  # stop when the forget-set mean NLL is at least this
    extraction_target: float | None = None  # stop when at most this fraction of forget answers is reproduced verbatim
    retain_nll_max_increase: float | None = 0.5  # nats over the starting retain NLL
    check_every: int | None = None  # steps between stop checks; None: every step for small forget sets, scaled up for large ones
    schema: int = field(default=SCHEMA_VERSION)

    def __post_init__(self):
        from forgetctl.adapters.objectives import OBJECTIVES

        if isinstance(self.target_modules, list):
            self.target_modules = tuple(self.target_modules)
        if isinstance(self.idk_answers, list):
            self.idk_answers = tuple(self.idk_answers)
        if self.schema != SCHEMA_VERSION:
            raise InputError(f"config schema {self.schema} is not supported (this forgetctl reads {SCHEMA_VERSION})")
        if self.method not in OBJECTIVES:
            raise InputError(f"unknown method '{self.method}' (choose from {', '.join(OBJECTIVES)})")
        _check_positive_ints(self, "rank", "batch_size", "grad_accum", "max_length")
        if self.check_every is not None:
            _check_positive_ints(self, "check_every")
        _check_positive(self, "alpha", "lr", "max_grad_norm", "npo_beta", "simnpo_beta")
        _check_nonnegative(self, "retain_weight", "kl_weight", "rmu_steering_coeff", "rmu_alpha", "simnpo_gamma")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")
        if (self.steps is None) == (self.epochs is None):
            raise InputError("give exactly one of steps and epochs")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise InputError(f"steps must be a positive integer, got {self.steps}")
        if self.epochs is not None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise InputError(f"epochs must be positive, got {self.epochs}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype}")
        if not self.target_modules or (
            not isinstance(self.target_modules, str) and not all(isinstance(m, str) and m for m in self.target_modules)
        ):
            raise InputError("target_modules must be 'all-linear' or a non-empty list of module names")
        if self.idk_answers is not None and (not self.idk_answers or not all(a.strip() for a in self.idk_answers)):
            raise InputError("idk_answers must be a non-empty list of non-empty strings")
        if self.rmu_layer is not None and self.rmu_layer < 0:
            raise InputError(f"rmu_layer must be >= 0, got {self.rmu_layer}")
        if self.extraction_target is not None and not 0.0 <= self.extraction_target <= 1.0:
            raise InputError(f"extraction_target is a fraction in [0, 1], got {self.extraction_target}")
        for name in ("forget_nll_target", "retain_nll_max_increase"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise InputError(f"{name} must be a non-negative number, got {value}")

    @property
    def has_target(self) -> bool:
        return self.forget_nll_target is not None or self.extraction_target is not None

    def to_dict(self) -> dict:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ForgetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> ForgetConfig:
        return type(self).from_dict({**self.to_dict(), **changes})


def _check_positive_ints(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def _check_positive(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
            raise InputError(f"{name} must be a positive number, got {value!r}")


def _check_nonnegative(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
            raise InputError(f"{name} must be a non-negative number, got {value!r}")
