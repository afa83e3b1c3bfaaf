"""llama.cpp's own quantizer for one tensor at a time, through ggml's C API.

``ggml_quantize_chunk`` is the function ``llama-quantize`` calls per tensor: the same
block formats, scale searches and, given an importance matrix, the same
importance-weighted rounding (each input column's error weighted by the mean squared
activation it multiplies). Calling it from Python lets the GGUF writer choose every
tensor's type itself (``formats.GGUF_MIXES``) and pass the importance matrix measured on
calibration text, without an f32 round trip through ``llama_model_quantize``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np


@functools.cache
def _ggml():
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.*")) or sorted(lib_dir.glob("libggml.*"))
    if not candidates:
        raise RuntimeError(f"no libggml-base in {lib_dir}; reinstall llama-cpp-python")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def quantize(weight: np.ndarray, qtype, importance: np.ndarray | None = None) -> np.ndarray:
    """Quantize ``weight`` (rows, n_per_row) to GGML type ``qtype`` (a gguf GGMLQuantizationType,
    whose values are ggml's enum). ``importance``: (n_per_row,) non-negative weights of the
    input columns (mean x^2 of the activations), or None. Returns (rows, row_bytes) uint8
    in the layout gguf-py writes with ``raw_dtype=qtype``."""
    lib = _ggml()
    rows, n_per_row = weight.shape
    source = np.ascontiguousarray(weight, dtype=np.float32)
    row_bytes = lib.ggml_row_size(int(qtype), n_per_row)
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    if importance is not None:
        importance = np.ascontiguousarray(importance, dtype=np.float32)
        if importance.shape != (n_per_row,):
            raise ValueError(f"importance has shape {importance.shape}, expected ({n_per_row},)")
    elif lib.ggml_quantize_requires_imatrix(int(qtype)):
        raise ValueError(f"{qtype.name} needs an importance matrix")
    lib.ggml_quantize_init(int(qtype))
    written = lib.ggml_quantize_chunk(int(qtype), source.ctypes.data, out.ctypes.data, 0, rows, n_per_row,
                                      importance.ctypes.data if importance is not None else None)
    if written != out.nbytes:
        raise RuntimeError(f"ggml wrote {written} bytes quantizing to {qtype.name}, expected {out.nbytes}")
    return out
