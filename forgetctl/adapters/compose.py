"""Composer: stack adapters for inspection, fold them into the pristine base for serving, squash them.

Merging always starts from the base weights on disk (never by unmerging, which is inexact in bf16)
and streams tensor by tensor: peak memory is about one tensor, never two copies of the model.
Deltas are summed at (at least) fp32 precision; each tensor is rounded once back to its base dtype.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from forgetctl.adapters import safetensors_stream as st
from forgetctl.adapters.lora_delta import LoraFactors, read_adapter_config, read_lora_factors
from forgetctl.digests import sha256_file
from forgetctl.errors import IncompatibleError, InputError

EXPORT_MARKER = "forgetctl_export.json"
SIDECAR = "forgetctl.json"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


# ----------------------------------------------------------------------------- checks


def _check_supported(adapter_dir: Path) -> dict:
    """Refuse adapter features whose weights read_lora_factors would not see (they would be lost silently)."""
    config = read_adapter_config(adapter_dir)
    if config.get("use_dora"):
        raise IncompatibleError(f"adapter {adapter_dir} uses DoRA, which forgetctl cannot merge exactly")
    if config.get("bias", "none") != "none":
        raise IncompatibleError(f"adapter {adapter_dir} trains biases (bias={config['bias']}); only bias='none' is supported")
    if config.get("modules_to_save"):
        raise IncompatibleError(f"adapter {adapter_dir} has modules_to_save {config['modules_to_save']}; not supported")
    for option in ("lora_bias", "layer_replication", "trainable_token_indices", "target_parameters"):
        if config.get(option):
            raise IncompatibleError(f"adapter {adapter_dir} uses {option}, which forgetctl cannot merge exactly")
    return config


def adapter_base_fingerprint(adapter_dir: str | Path) -> str | None:
    """The base fingerprint recorded in an adapter's forgetctl.json sidecar, if it has one."""
    path = Path(adapter_dir) / SIDECAR
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("base_fingerprint")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def check_same_base(adapter_dirs: list[Path], base_fingerprint: str | None = None, base_label: str = "the base") -> None:
    """Every adapter must come from the same base: the expected fingerprint if given, else each other.

    Sidecar fingerprints are authoritative; without them, adapter_config's base_model_name_or_path is
    compared only between adapters (a path may legitimately differ from the folder in use).
    """
    for d in adapter_dirs:
        fp = adapter_base_fingerprint(d)
        if base_fingerprint and fp and fp != base_fingerprint:
            raise IncompatibleError(
                f"adapter {d} was trained against base {fp}, but {base_label} is {base_fingerprint}"
            )
    seen: tuple[Path, str] | None = None
    for d in adapter_dirs:
        fp = adapter_base_fingerprint(d)
        if fp is None:
            continue
        if seen and seen[1] != fp:
            raise IncompatibleError(f"adapter {seen[0]} is for base {seen[1]} but adapter {d} is for base {fp}")
        seen = seen or (d, fp)
    if seen is None:
        names = [(d, read_adapter_config(d).get("base_model_name_or_path")) for d in adapter_dirs]
        names = [(d, n) for d, n in names if n]
        for d, n in names[1:]:
            if n != names[0][1]:
                raise IncompatibleError(
                    f"adapter {names[0][0]} was made for base {names[0][1]} but adapter {d} for base {n}"
                )


def _expected_shape(f: LoraFactors) -> tuple[int, int]:
    out_in = (f.B.shape[0], f.A.shape[1])
    return out_in[::-1] if f.fan_in_fan_out else out_in


def check_shapes(adapters: list[tuple[Path, dict[str, LoraFactors]]], shapes: dict[str, tuple], base_label: str) -> None:
    """Each targeted module must exist in the base with the shape its delta has."""
    for d, factors in adapters:
        for module, f in factors.items():
            if f.A.shape[0] != f.B.shape[1]:
                raise IncompatibleError(f"adapter {d}: {module} has lora_A rank {f.A.shape[0]} but lora_B rank {f.B.shape[1]}")
            name = f"{module}.weight"
            if name not in shapes:
                raise IncompatibleError(f"adapter {d} targets {module}, which base {base_label} does not have")
            if tuple(shapes[name]) != _expected_shape(f):
                raise IncompatibleError(
                    f"adapter {d} has shape {_expected_shape(f)} for {module}, base {base_label} has {tuple(shapes[name])}"
                )


def _load_factors(adapter_dirs) -> list[tuple[Path, dict[str, LoraFactors]]]:
    dirs = [Path(d) for d in adapter_dirs]
    for d in dirs:
        _check_supported(d)
    return [(d, read_lora_factors(d)) for d in dirs]


# ----------------------------------------------------------------------------- stack


def _model_shapes(model) -> dict[str, tuple]:
    return {
        f"{n}.weight": tuple(m.weight.shape)
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor)
    }


def load_stacked(base_dir, adapter_dirs, device=None, dtype=None, base_fingerprint: str | None = None):
    """The base with each adapter loaded under its own name (a0, a1, ...) and all active, in order; frozen.

    With no adapters this is the plain base model (there is nothing to stack).
    """
    from peft import PeftModel

    from forgetctl.adapters.base_model import load_base

    dirs = [Path(d) for d in adapter_dirs]
    check_same_base(dirs, base_fingerprint)
    loaded = _load_factors(dirs)
    model, _ = load_base(base_dir, device=device, dtype=dtype)
    check_shapes(loaded, _model_shapes(model), str(base_dir))
    if not dirs:
        return model
    names = [f"a{i}" for i in range(len(dirs))]
    model = PeftModel.from_pretrained(model, str(dirs[0]), adapter_name=names[0], is_trainable=False)
    for name, d in zip(names[1:], dirs[1:]):
        model.load_adapter(str(d), adapter_name=name, is_trainable=False)
    model.base_model.set_adapter(names, inference_mode=True)
    model.requires_grad_(False)
    model.eval()
    return model


def load_merged(base_dir, adapter_dirs, device=None, dtype=None, base_fingerprint: str | None = None):
    """(model, tokenizer) with the adapters folded into a freshly loaded base, in memory (fp32 arithmetic)."""
    from forgetctl.adapters.base_model import load_base

    dirs = [Path(d) for d in adapter_dirs]
    check_same_base(dirs, base_fingerprint)
    loaded = _load_factors(dirs)
    model, tokenizer = load_base(base_dir, device=device, dtype=dtype)
    check_shapes(loaded, _model_shapes(model), str(base_dir))
    with torch.no_grad():
        modules = dict(model.named_modules())
        for name, delta in _summed_deltas(loaded):
            w = modules[name].weight
            w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
    return model, tokenizer


def _summed_deltas(loaded):
    """(module, fp32 delta summed over adapters in order), one module at a time."""
    modules: dict[str, list[LoraFactors]] = {}
    for _, factors in loaded:
        for module, f in factors.items():
            modules.setdefault(module, []).append(f)
    for module, fs in modules.items():
        yield module, _delta_sum(fs, torch.float32)


def _delta_sum(factors: list[LoraFactors], dtype: torch.dtype) -> torch.Tensor:
    """sum_i s_i B_i A_i in `dtype`, as [s_1 B_1 ... s_n B_n] @ [A_1; ...; A_n]: one GEMM over the
    concatenated ranks, where a rank-8 product per adapter would be memory-bound."""
    plain = [f for f in factors if not f.fan_in_fan_out]
    total = None
    if plain:
        b = torch.cat([f.B.to(dtype) * f.scale for f in plain], dim=1)
        total = b @ torch.cat([f.A.to(dtype) for f in plain], dim=0)
    for f in factors:
        if f.fan_in_fan_out:
            d = ((f.B.to(dtype) * f.scale) @ f.A.to(dtype)).T
            total = d if total is None else total + d
    return total


# ----------------------------------------------------------------------------- merge / export


def _base_weight_files(base_dir: Path) -> list[str]:
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted(set(weight_map.values()))
    if (base_dir / "model.safetensors").is_file():
        return ["model.safetensors"]
    raise InputError(f"{base_dir} has no safetensors weights (pickled checkpoints are refused)")


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _check_out_dir(out: Path, protected: list[Path]) -> bool:
    """Refuse destinations that would destroy inputs or unrelated files; True if a previous export is there."""
    for p in protected:
        p = p.resolve()
        if _inside(p, out) or _inside(out, p):
            raise InputError(f"refusing to write the export to {out}: it overlaps the input {p}")
    if not out.exists():
        return False
    if not out.is_dir():
        raise InputError(f"refusing to write the export to {out}: it exists and is not a folder")
    if not any(out.iterdir()):
        return False
    if not (out / EXPORT_MARKER).is_file():
        raise InputError(f"refusing to overwrite {out}: it is not empty and is not a previous forgetctl export")
    try:
        ours = set(json.loads((out / EXPORT_MARKER).read_text()).get("files", []))
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        raise InputError(f"refusing to overwrite {out}: its {EXPORT_MARKER} is unreadable") from None
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours | {EXPORT_MARKER})
    if foreign:
        raise InputError(f"refusing to replace the export at {out}: it also holds files forgetctl did not write ({', '.join(foreign[:5])})")
    return True


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename tmp onto out; an existing out is moved aside first and deleted only once tmp is in place."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def default_card(base_dir, adapter_dirs) -> str:
    lines = ["---", "library_name: transformers", "tags: [forgetctl, unlearning]", "---", "", "# Merged forgetctl export", ""]
    lines += [f"Base: `{Path(base_dir).name}`", "", "Adapters folded in, in order:"]
    lines += [f"{i + 1}. `{Path(d).name}`" for i, d in enumerate(adapter_dirs)] or ["(none: the pristine base)"]
    return "\n".join(lines) + "\n"


def _fold(weight: torch.Tensor, factors: list[LoraFactors]) -> torch.Tensor:
    """weight + sum of deltas, rounded once to the weight's dtype.

    Accumulated in fp64 so that BLAS summation order (thread count, CPU) cannot change a rounded
    bit: re-exports on another machine stay bit-identical.
    """
    return (weight.double() + _delta_sum(factors, torch.float64)).to(weight.dtype)


def merge_export(
    base_dir,
    adapter_dirs,
    out_dir,
    card: str | None = None,
    tokenizer_from=None,
    base_fingerprint: str | None = None,
) -> dict:
    """Fold the adapters (in order) into the pristine base weights and write a transformers checkpoint.

    Same tensor names, dtypes and shard layout as the base; deterministic bytes (fixed safetensors
    metadata, base tensor order, no timestamps), so re-exporting a composition is bit-identical.
    """
    started = time.monotonic()
    base_dir = Path(base_dir).resolve()
    tokenizer_from = Path(tokenizer_from).resolve() if tokenizer_from else base_dir
    dirs = [Path(d) for d in adapter_dirs]
    out = Path(out_dir).expanduser().resolve()
    if not (base_dir / "config.json").is_file():
        raise InputError(f"{base_dir} is not a transformers model folder (no config.json)")
    files = _base_weight_files(base_dir)
    replacing = _check_out_dir(out, [base_dir, tokenizer_from, *dirs])

    check_same_base(dirs, base_fingerprint, f"base {base_dir}")
    loaded = _load_factors(dirs)
    layouts = {name: st.read_layout(base_dir / name) for name in files}
    shapes = {t.name: t.shape for layout in layouts.values() for t in layout.tensors}
    check_shapes(loaded, shapes, str(base_dir))

    # fp32 factors grouped per tensor; each delta is built only when its tensor is streamed.
    per_tensor: dict[str, list[LoraFactors]] = {}
    for _, factors in loaded:
        for module, f in factors.items():
            per_tensor.setdefault(f"{module}.weight", []).append(f)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        digests, changed = {}, 0
        for name in files:
            layout = layouts[name]

            def tensors(layout=layout, path=base_dir / name):
                nonlocal changed
                for t in layout.tensors:
                    # One mapping per tensor: closing it unmaps the pages read, so resident memory stays
                    # near one tensor instead of growing to the whole shard.
                    with safe_open(str(path), framework="pt") as f:
                        value = f.get_tensor(t.name)
                    fs = per_tensor.get(t.name)
                    if fs:
                        value = _fold(value, fs)
                        changed += 1
                    yield value

            digests[name] = st.write_streamed(tmp / name, layout, tensors())
        if (base_dir / "model.safetensors.index.json").is_file():
            shutil.copyfile(base_dir / "model.safetensors.index.json", tmp / "model.safetensors.index.json")
        for extra in ("config.json", "generation_config.json"):
            if (base_dir / extra).is_file():
                shutil.copyfile(base_dir / extra, tmp / extra)
        for extra in _TOKENIZER_FILES:
            if (tokenizer_from / extra).is_file():
                shutil.copyfile(tokenizer_from / extra, tmp / extra)
        (tmp / "README.md").write_text(card if card else default_card(base_dir, dirs), encoding="utf-8")
        manifest = {
            "schema": 1,
            "kind": "merged-export",
            "adapters": [{"name": d.name, "sha256": sha256_file(d / "adapter_model.safetensors")} for d in dirs],
            "weight_files": digests,
            "dtypes": sorted({t.dtype for layout in layouts.values() for t in layout.tensors}),
            "files": sorted(p.name for p in tmp.iterdir()),
        }
        (tmp / EXPORT_MARKER).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "out_dir": str(out),
        "weight_files": digests,
        "tensors": sum(len(layout.tensors) for layout in layouts.values()),
        "tensors_changed": changed,
        "adapter_count": len(dirs),
        "dtypes": manifest["dtypes"],
        "replaced_previous_export": replacing,
        "seconds": round(time.monotonic() - started, 3),
    }


# ----------------------------------------------------------------------------- squash


def _module_factors(loaded) -> dict[str, list[tuple[Path, LoraFactors]]]:
    modules: dict[str, list[tuple[Path, LoraFactors]]] = {}
    for d, factors in loaded:
        for module, f in factors.items():
            prev = modules.get(module)
            if prev and (prev[0][1].A.shape[1], prev[0][1].B.shape[0]) != (f.A.shape[1], f.B.shape[0]):
                p = prev[0][1]
                raise IncompatibleError(
                    f"adapter {prev[0][0]} has {module} of shape {(p.B.shape[0], p.A.shape[1])} "
                    f"but adapter {d} has {(f.B.shape[0], f.A.shape[1])}"
                )
            if prev and prev[0][1].fan_in_fan_out != f.fan_in_fan_out:
                raise IncompatibleError(f"adapters {prev[0][0]} and {d} disagree on fan_in_fan_out for {module}")
            modules.setdefault(module, []).append((d, f))
    return modules


def _concat(fs: list[LoraFactors]) -> tuple[torch.Tensor, torch.Tensor]:
    """A stacked over ranks, B concatenated with each adapter's scale folded in: B @ A = sum of deltas."""
    A = torch.cat([f.A.float() for f in fs], dim=0)
    B = torch.cat([f.B.float() * f.scale for f in fs], dim=1)
    return A, B


def _svd_truncate(A: torch.Tensor, B: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Best rank-k factors of B @ A via QR of the thin factors (never forms the full matrix's SVD).

    Returns (A_k, B_k, squared error, squared norm) in Frobenius terms.
    """
    Qb, Rb = torch.linalg.qr(B.double())  # (out, R), (R, R)
    Qa, Ra = torch.linalg.qr(A.double().T)  # (in, R), (R, R)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T)
    k = min(rank, S.shape[0])
    root = S[:k].sqrt()
    B_k = (Qb @ U[:, :k]) * root
    A_k = root[:, None] * (Vh[:k] @ Qa.T)
    if k < rank:  # pad to the uniform rank with zeros (adds nothing to the delta)
        B_k = torch.cat([B_k, B_k.new_zeros(B_k.shape[0], rank - k)], dim=1)
        A_k = torch.cat([A_k, A_k.new_zeros(rank - k, A_k.shape[1])], dim=0)
    err2 = float((S[k:] ** 2).sum())
    norm2 = float((S**2).sum())
    return A_k.float(), B_k.float(), err2, norm2


def squash(adapter_dirs, out_dir, mode: str = "exact", rank: int | None = None, base_fingerprint: str | None = None) -> dict:
    """Combine adapters into one PEFT LoRA adapter whose delta is the sum of theirs.

    exact: ranks are concatenated per module (no approximation); svd: truncated SVD of each module's
    summed delta to `rank`, with the relative Frobenius error reported per module and overall.
    Never a weighted `linear` combination (PEFT's cross-term trap).
    """
    from peft import LoraConfig

    dirs = [Path(d) for d in adapter_dirs]
    if not dirs:
        raise InputError("squash needs at least one adapter")
    if mode not in ("exact", "svd"):
        raise InputError(f"unknown squash mode {mode!r} (use exact or svd)")
    if mode == "svd" and (rank is None or rank < 1):
        raise InputError("--mode svd needs --rank N with N >= 1")
    if mode == "exact" and rank is not None:
        raise InputError("--rank only applies to --mode svd (exact keeps every rank)")
    out = Path(out_dir).expanduser().resolve()
    for d in dirs:
        if _inside(d.resolve(), out) or _inside(out, d.resolve()):
            raise InputError(f"refusing to write the squashed adapter to {out}: it overlaps the input {d}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"refusing to write the squashed adapter to {out}: it exists and is not empty")
    check_same_base(dirs, base_fingerprint)
    loaded = _load_factors(dirs)
    configs = [read_adapter_config(d) for d in dirs]
    modules = _module_factors(loaded)

    tensors, ranks, errors = {}, {}, {}
    total_err2 = total_norm2 = 0.0
    for module in sorted(modules):
        A, B = _concat([f for _, f in modules[module]])
        if mode == "svd":
            A, B, err2, norm2 = _svd_truncate(A, B, rank)
            total_err2 += err2
            total_norm2 += norm2
            errors[module] = (err2 / norm2) ** 0.5 if norm2 > 0 else 0.0
        ranks[module] = A.shape[0]
        tensors[f"base_model.model.{module}.lora_A.weight"] = A.contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = B.contiguous()

    r = max(ranks.values())
    # scale 1 everywhere: alpha == rank per module (rank_pattern keys are full module names)
    config = LoraConfig(
        r=r,
        lora_alpha=r,
        target_modules=sorted(modules),
        rank_pattern={m: k for m, k in ranks.items() if k != r},
        alpha_pattern={m: k for m, k in ranks.items() if k != r},
        lora_dropout=0.0,
        bias="none",
        use_rslora=False,
        fan_in_fan_out=next(iter(modules.values()))[0][1].fan_in_fan_out,
        task_type=configs[0].get("task_type") or "CAUSAL_LM",
        base_model_name_or_path=configs[0].get("base_model_name_or_path"),
    )
    fingerprints = {adapter_base_fingerprint(d) for d in dirs} - {None}
    report = {
        "mode": mode,
        "rank": r if mode == "exact" else rank,
        "modules": len(modules),
        "sources": [{"name": d.name, "sha256": sha256_file(d / "adapter_model.safetensors")} for d in dirs],
    }
    if mode == "svd":
        report["relative_error"] = (total_err2 / total_norm2) ** 0.5 if total_norm2 > 0 else 0.0
        report["relative_error_per_module"] = errors
        report["max_module_error"] = max(errors.values(), default=0.0)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "squash.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if len(fingerprints) == 1:
            sidecar = {"schema": 1, "method": f"squash-{mode}", "base_fingerprint": fingerprints.pop()}
            (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()  # checked empty above
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out_dir": str(out), **report}
