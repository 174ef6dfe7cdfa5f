"""LoRA weight deltas read straight from a PEFT adapter folder (safetensors only).

Shared by the trainer (folding the HEAD composition into the in-memory base before a new
adapter is trained on top) and the composer (merge, squash). Arithmetic is fp32.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from forgetctl.errors import IncompatibleError, InputError

_PREFIX = "base_model.model."


@dataclass
class LoraFactors:
    """For one target module: delta W = scale * B @ A."""

    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scale: float
    fan_in_fan_out: bool = False

    def delta(self) -> torch.Tensor:
        d = (self.B.float() @ self.A.float()) * self.scale
        return d.T if self.fan_in_fan_out else d


def read_adapter_config(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise InputError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)")
    config = json.loads(path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise IncompatibleError(f"{adapter_dir}: only LoRA adapters are supported, got {config.get('peft_type')}")
    return config


def _scale(config: dict, module: str, rank: int) -> float:
    alpha = config.get("alpha_pattern", {}).get(module.rsplit(".", 1)[-1], config.get("lora_alpha", rank))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def read_lora_factors(adapter_dir: str | Path) -> dict[str, LoraFactors]:
    """Map base-model module name (e.g. 'model.layers.0.self_attn.q_proj') to its LoRA factors."""
    config = read_adapter_config(adapter_dir)
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        raise InputError(f"{adapter_dir}: no adapter_model.safetensors (pickled adapters are refused)")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                if "lora_" in key or "modules_to_save" in key:
                    raise IncompatibleError(f"{adapter_dir}: unsupported adapter tensor {key}")
                continue
            side = "A" if ".lora_A." in key else "B"
            module = key.split(f".lora_{side}.")[0]
            module = module[len(_PREFIX) :] if module.startswith(_PREFIX) else module
            tensors.setdefault(module, {})[side] = f.get_tensor(key)
    factors = {}
    for module, pair in tensors.items():
        if set(pair) != {"A", "B"}:
            raise IncompatibleError(f"{adapter_dir}: module {module} lacks lora_A or lora_B")
        rank = pair["A"].shape[0]
        factors[module] = LoraFactors(pair["A"], pair["B"], _scale(config, module, rank), config.get("fan_in_fan_out", False))
    return factors


@torch.no_grad()
def fold_adapters_into(model, adapter_dirs: list[str | Path]) -> None:
    """Add each adapter's delta to the model's weights, in order, in place (fp32 arithmetic).

    Used on a freshly loaded base: the pristine weights on disk are never touched.
    """
    modules = dict(model.named_modules())
    for adapter_dir in adapter_dirs:
        for name, factors in read_lora_factors(adapter_dir).items():
            target = modules.get(name)
            if target is None or not hasattr(target, "weight"):
                raise IncompatibleError(f"adapter {adapter_dir} targets {name}, which the base model does not have")
            delta = factors.delta()
            if tuple(delta.shape) != tuple(target.weight.shape):
                raise IncompatibleError(
                    f"adapter {adapter_dir} has shape {tuple(delta.shape)} for {name}, base has {tuple(target.weight.shape)}"
                )
            merged = target.weight.float() + delta.to(target.weight.device)
            target.weight.copy_(merged.to(target.weight.dtype))
