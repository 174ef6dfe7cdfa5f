"""Content fingerprint of a base model's weights, torch-free.

sha256 over the weight files streamed in name order: every `*.safetensors` of a transformers
folder, or a single `.gguf` file; i.e. what `cat *.safetensors | sha256sum` prints. Hashing
gigabytes takes seconds, so results are cached keyed by each file's (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from forgetctl.errors import InputError, NotFoundError

PREFIX = "sha256:"


def weight_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in (".gguf", ".safetensors"):
            raise InputError(f"{path.name}: a base model is a folder of .safetensors or a .gguf file")
        return [path]
    if not path.is_dir():
        raise NotFoundError(f"base model not found: {path}")
    files = sorted(p for p in path.glob("*.safetensors") if p.is_file())
    if not files:
        raise InputError(f"{path}: no .safetensors weight files to fingerprint")
    return files


def _cache_key(files: list[Path]) -> str:
    parts = []
    for p in files:
        st = p.stat()
        parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _load_cache(cache_file: Path | None) -> dict:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a re-hash


def _save_cache(cache_file: Path, data: dict) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fingerprints-", dir=cache_file.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, cache_file)


def fingerprint(path: str | os.PathLike, cache_file: Path | None = None) -> str:
    """'sha256:<hex>' of the weights at `path` (folder or .gguf)."""
    files = weight_files(Path(path))
    key = _cache_key(files)
    cache = _load_cache(cache_file)
    if isinstance(cache.get(key), str) and cache[key].startswith(PREFIX):
        return cache[key]
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    result = PREFIX + h.hexdigest()
    if cache_file is not None:
        cache[key] = result
        _save_cache(cache_file, cache)
    return result


def short(fp: str | None) -> str:
    """'sha256:1a2b3c4d5e6f' for messages."""
    if not fp:
        return "(none)"
    return fp[: len(PREFIX) + 12] if fp.startswith(PREFIX) else fp[:12]
