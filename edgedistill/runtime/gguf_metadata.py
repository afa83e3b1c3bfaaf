"""Read key/value metadata from a GGUF header in pure Python (no gguf-py, no llama.cpp).

Layout (GGUF v2/v3, little endian): magic ``GGUF``, u32 version, u64 tensor count,
u64 key count, then per key: u64-length UTF-8 name, u32 value type, value. Reading stops
as soon as every wanted key is found, so the large token arrays are usually not touched.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(handle: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("GGUF header ends early")
    return struct.unpack(fmt, data)[0]


def _read_value(handle: BinaryIO, value_type: int):
    if value_type in _SCALARS:
        return _read(handle, _SCALARS[value_type])
    if value_type == _STRING:
        return handle.read(_read(handle, "<Q")).decode("utf-8", errors="replace")
    if value_type == _ARRAY:
        item_type, count = _read(handle, "<I"), _read(handle, "<Q")
        return [_read_value(handle, item_type) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {value_type}")


def read_gguf_metadata(path: str | Path, keys: set[str] | None = None) -> dict:
    """``keys`` of the file's metadata (all of it when None); absent keys are left out."""
    found: dict = {}
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        _version, _tensors, count = _read(handle, "<I"), _read(handle, "<Q"), _read(handle, "<Q")
        for _ in range(count):
            key = handle.read(_read(handle, "<Q")).decode("utf-8")
            found[key] = _read_value(handle, _read(handle, "<I"))
            if keys is not None and keys <= found.keys():
                break
    return found if keys is None else {k: v for k, v in found.items() if k in keys}
