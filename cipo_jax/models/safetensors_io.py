"""Reading safetensors files with checks that name the broken file and tensor.

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}} and the raw data; reading it directly (memory-mapped) gives bfloat16 via
ml_dtypes and exact truncation errors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import safetensors.numpy

from cipo_jax.models.config import WeightError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of one file as read-only memory-mapped numpy arrays."""
    size = path.stat().st_size
    if size < 8:
        raise WeightError(f"truncated safetensors file {path}: {size} bytes, no header")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if 8 + header_len > size:
            raise WeightError(f"truncated safetensors file {path}: header of {header_len} bytes, file has {size}")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise WeightError(f"corrupt safetensors header in {path}: {e}") from None
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len) if size > 8 + header_len else None
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        if 8 + header_len + end > size:
            raise WeightError(
                f"truncated safetensors file {path}: tensor {name!r} ends at byte {8 + header_len + end}, file has {size}"
            )
        if info["dtype"] not in _DTYPES:
            raise WeightError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        raw = data[start:end] if end > start else np.zeros(0, np.uint8)
        out[name] = raw.view(_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    # "format": "pt" is what transformers expects in the metadata of a PyTorch checkpoint.
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
