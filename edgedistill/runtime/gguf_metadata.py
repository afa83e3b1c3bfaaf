"""Read and check a GGUF header in pure Python (no gguf-py, no llama.cpp).

Layout (GGUF v2/v3, little endian): magic ``GGUF``, u32 version, u64 tensor count,
u64 key count, then per key: u64-length UTF-8 name, u32 value type, value; then per
tensor: u64-length name, u32 dimension count, u64 per dimension, u32 ggml type, u64
offset into the data section, which starts at the next multiple of
``general.alignment`` (default 32) after the header.

Every length and count read from the file is checked against the bytes the file has
left before anything is allocated or read, so a damaged or hostile header fails with
one ValueError naming the file, never a multi-GB allocation (:func:`check_gguf` walks
the whole header and the tensors' data extents; llama.cpp is only handed a file that
passed it).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_DEFAULT_ALIGNMENT = 32
# ggml type id -> (values per block, bytes per block): ggml.h / ggml.c's type traits, the
# types llama.cpp 0.3.x reads (checked against gguf-py's GGML_QUANT_SIZES by a test).
GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}


class DamagedGGUF(ValueError):
    """The file is not a well-formed GGUF (truncated, corrupted or hostile)."""


class _Header:
    """Bounded reads over an open GGUF file of ``size`` bytes."""

    def __init__(self, handle: BinaryIO, size: int, path):
        self.handle, self.size, self.path = handle, size, path

    def fail(self, what: str) -> DamagedGGUF:
        return DamagedGGUF(f"{self.path} is a damaged GGUF file: {what}; export or download it again")

    def left(self) -> int:
        return self.size - self.handle.tell()

    def read(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self.handle.read(size)
        if len(data) != size:
            raise self.fail(f"the header ends early (at byte {self.handle.tell()} of {self.size})")
        return struct.unpack(fmt, data)[0]

    def length(self, what: str, item_bytes: int = 1) -> int:
        """A u64 count of items of at least ``item_bytes`` each that must fit in what is left."""
        count = self.read("<Q")
        if count * item_bytes > self.left():
            raise self.fail(f"{what} claims {count:,} items, more than the {self.left():,} bytes left")
        return count

    def string(self, what: str, keep: bool = True) -> str | None:
        size = self.length(what)
        if not keep:
            self.handle.seek(size, os.SEEK_CUR)
            return None
        return self.handle.read(size).decode("utf-8", errors="replace")

    def value(self, value_type: int, keep: bool = True, depth: int = 0):
        if value_type in _SCALARS:
            return self.read(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string("a string", keep)
        if value_type == _ARRAY and depth == 0:  # GGUF arrays of arrays exist in the spec, none in any model
            item_type = self.read("<I")
            smallest = struct.calcsize(_SCALARS[item_type]) if item_type in _SCALARS else 8
            count = self.length("an array", smallest)
            if item_type in _SCALARS and not keep:
                self.handle.seek(count * smallest, os.SEEK_CUR)
                return None
            items = [self.value(item_type, keep, depth + 1) for _ in range(count)]
            return items if keep else None
        raise self.fail(f"unknown value type {value_type}")


def _open_header(handle: BinaryIO, path) -> tuple[_Header, int, int]:
    """Checks magic and version; returns the reader, tensor count and key count."""
    size = os.fstat(handle.fileno()).st_size
    header = _Header(handle, size, path)
    if handle.read(4) != b"GGUF":
        raise DamagedGGUF(f"{path} is not a GGUF file (no GGUF magic)")
    version = header.read("<I")
    if version not in _VERSIONS:
        raise header.fail(f"version {version} (llama.cpp reads {' and '.join(map(str, _VERSIONS))})")
    tensors = header.length("the tensor count", 8 + 4 + 4 + 8)  # the smallest tensor record
    keys = header.length("the key count", 8 + 4 + 1)  # the smallest key record
    return header, tensors, keys


def read_gguf_metadata(path: str | Path, keys: set[str] | None = None) -> dict:
    """``keys`` of the file's metadata (all of it when None); absent keys are left out.
    Reading stops once every wanted key is found; values of other keys are skipped."""
    found: dict = {}
    with open(path, "rb") as handle:
        header, _tensors, count = _open_header(handle, path)
        for _ in range(count):
            key = header.string("a key name")
            wanted = keys is None or key in keys
            value = header.value(header.read("<I"), keep=wanted)
            if wanted:
                found[key] = value
            if keys is not None and keys <= found.keys():
                break
    return found


def check_gguf(path: str | Path) -> dict:
    """Walk the whole header and check every tensor's type, shape and data extent against
    the file; raises :class:`DamagedGGUF` (a ValueError) naming the first problem. Returns
    the metadata walked past except arrays (the token tables), so a loader reads it once."""
    scalars: dict = {}
    with open(path, "rb") as handle:
        header, tensors, count = _open_header(handle, path)
        for _ in range(count):
            key = header.string("a key name")
            value_type = header.read("<I")
            keep = value_type != _ARRAY or key == "general.alignment"  # an array there is damage, not a table
            value = header.value(value_type, keep=keep)
            if keep:
                scalars[key] = value
        alignment = scalars.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise header.fail(f"general.alignment is {alignment!r}, not a power of two")
        extents = []
        for index in range(tensors):
            name = header.string("a tensor name")
            dims = header.read("<I")
            if not 1 <= dims <= _MAX_DIMS:
                raise header.fail(f"tensor {name!r} has {dims} dimensions")
            shape = [header.read("<Q") for _ in range(dims)]
            ggml_type, offset = header.read("<I"), header.read("<Q")
            if ggml_type not in GGML_BLOCKS:
                raise header.fail(f"tensor {name!r} has unknown ggml type {ggml_type}")
            block_values, block_bytes = GGML_BLOCKS[ggml_type]
            values = 1
            for extent in shape:
                values *= extent
            if shape[0] % block_values or offset % alignment:
                raise header.fail(f"tensor {name!r}: row of {shape[0]} values or offset {offset} does not fit "
                                  f"its type's blocks of {block_values} / the alignment {alignment}")
            extents.append((name, offset, values // block_values * block_bytes))
        data_start = -(-handle.tell() // alignment) * alignment
        for name, offset, nbytes in extents:
            if data_start + offset + nbytes > header.size:
                raise header.fail(f"tensor {name!r} needs bytes {data_start + offset:,}-{data_start + offset + nbytes:,} "
                                  f"but the file has {header.size:,} (truncated?)")
    return scalars
