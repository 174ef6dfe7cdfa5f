"""Reading a safetensors header and writing a file tensor by tensor.

safetensors' own writers need every tensor of a file in memory at once; the merge must not hold a
second copy of the model, so it writes the (simple, documented) format itself: 8-byte little-endian
header length, JSON header padded with spaces to 8 bytes, then the raw little-endian tensor bytes.
Output is deterministic: fixed metadata, the base file's tensor order, sorted JSON keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from forgetctl.errors import IntegrityError

FIXED_METADATA = {"format": "pt"}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors code: F32, BF16, ...
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class Layout:
    tensors: tuple[TensorInfo, ...]  # in file order


def read_layout(path: str | Path) -> Layout:
    """Tensor names, dtypes and shapes of a safetensors file, in on-disk order (no tensor data read)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise IntegrityError(f"{path} is not a safetensors file (truncated)")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER:
            raise IntegrityError(f"{path} is not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise IntegrityError(f"{path} is not a safetensors file (bad header)") from None
    header.pop("__metadata__", None)
    ordered = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return Layout(
        tuple(
            TensorInfo(name, v["dtype"], tuple(v["shape"]), v["data_offsets"][1] - v["data_offsets"][0])
            for name, v in ordered
        )
    )


def _header_bytes(layout: Layout) -> bytes:
    header: dict = {"__metadata__": FIXED_METADATA}
    offset = 0
    for t in layout.tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    data = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    data += b" " * (-len(data) % 8)
    return struct.pack("<Q", len(data)) + data


def write_streamed(path: str | Path, layout: Layout, tensors: Iterable[torch.Tensor]) -> str:
    """Write tensors (in layout order, same dtype/shape) to path, one at a time; returns the file's sha256."""
    h = hashlib.sha256()
    header = _header_bytes(layout)
    with open(path, "wb") as out:
        out.write(header)
        h.update(header)
        for info, value in zip(layout.tensors, tensors, strict=True):
            if tuple(value.shape) != info.shape:
                raise IntegrityError(f"{info.name}: shape {tuple(value.shape)} differs from the layout's {info.shape}")
            buf = value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            if buf.nbytes != info.nbytes:
                raise IntegrityError(f"{info.name}: {buf.nbytes} bytes, layout says {info.nbytes}")
            out.write(memoryview(buf))
            h.update(memoryview(buf))
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()
