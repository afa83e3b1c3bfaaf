"""Offline teacher: top-k log-probabilities per position, stored once, memory-mapped.

The teacher reads every packed window once (training windows then held-out windows, in
that order) and, for each of the L-1 predicted positions, keeps its ``k`` most likely
tokens: ids, log-probabilities at the KD temperature T (log_softmax(logits / T) over the
shared vocabulary, so exp() of them sums to <= 1), and the tail mass
1 - sum(exp(top-k log-probs)) that the sparse loss assigns to the remaining tokens
(losses.py, ``sparse_forward_kl_per_token``).

Layout of the cache folder (all written into a temporary folder and renamed into place):

* per chunk of ``chunk_windows`` windows, three arrays: ``ids-00000.npy`` (W, L-1, k) uint16 (int32 when the
  vocabulary exceeds 65,535), ``logprobs-00000.npy`` (W, L-1, k) float16 and
  ``tail-00000.npy`` (W, L-1) float32;
* ``meta.json``: what the cache was built from (``fingerprint``: teacher, windows, k, T),
  shapes, ``bytes_per_token``, and the sha256 of every chunk file, written last.

Chunks are opened with ``numpy.load(mmap_mode="r")``; each chunk's checksum is verified
the first time it is read, so a corrupted cache fails loudly instead of training on junk.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from edgedistill.artifacts import sha256_file
from edgedistill.errors import UserError

FORMAT_VERSION = 1
META_NAME = "meta.json"
DEFAULT_CHUNK_WINDOWS = 256


def windows_fingerprint(ids: torch.Tensor, teacher_hash: str, k: int, temperature: float, vocab_size: int,
                        bf16: bool = False) -> str:
    """What a cache is valid for: the exact token windows, the teacher, k, T, vocab and the
    precision the teacher ran in."""
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT_VERSION, teacher_hash, k, float(temperature), vocab_size, list(ids.shape),
                              "bf16" if bf16 else "fp32"]).encode())
    digest.update(ids.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def teacher_topk(teacher, ids: torch.Tensor, k: int, temperature: float, vocab_size: int, row_chunk: int = 1024,
                 bf16: bool = False):
    """Top-k (ids (B, L-1, k), log-probs at T (B, L-1, k) fp32) of the teacher over windows
    ``ids`` (B, L); the lm_head is applied ``row_chunk`` positions at a time in the head's
    dtype. ``bf16`` autocasts the transformer body, as the online trainer does."""
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = teacher.get_decoder()(ids).last_hidden_state[:, :-1]  # (B, L-1, H)
    head = teacher.get_output_embeddings()
    rows = hidden.reshape(-1, hidden.shape[-1]).to(head.weight.dtype)
    top_ids, top_logprobs = [], []
    for start in range(0, rows.shape[0], row_chunk):
        logits = head(rows[start:start + row_chunk]).float()[:, :vocab_size]  # (C, V)
        logprobs = torch.log_softmax(logits / temperature, dim=-1)
        values, indices = logprobs.topk(k, dim=-1)
        top_ids.append(indices)
        top_logprobs.append(values)
    shape = (*hidden.shape[:2], k)
    return torch.cat(top_ids).view(shape), torch.cat(top_logprobs).view(shape)


def build_teacher_cache(teacher, ids: torch.Tensor, folder: Path, *, k: int, temperature: float, vocab_size: int,
                        fingerprint: str, batch_size: int = 8, chunk_windows: int = DEFAULT_CHUNK_WINDOWS,
                        bf16: bool = False, on_batch=lambda done, total: None) -> "TeacherCache":
    """Run ``teacher`` over ``ids`` (N, L) and write the cache to ``folder`` (replacing it).
    ``bf16``: autocast the teacher's body (match the precision the online trainer uses)."""
    if k > vocab_size:
        raise UserError(f"distill.teacher_topk={k} exceeds the vocabulary ({vocab_size}); choose k <= {vocab_size}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    id_dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    device = next(teacher.parameters()).device
    files = {}
    for chunk_index, chunk_start in enumerate(range(0, len(ids), chunk_windows)):
        chunk = ids[chunk_start:chunk_start + chunk_windows]
        parts = [teacher_topk(teacher, batch.to(device), k, temperature, vocab_size, bf16=bf16)
                 for batch in chunk.split(batch_size)]
        top_ids = torch.cat([p[0] for p in parts]).cpu()
        top_logprobs = torch.cat([p[1] for p in parts]).cpu()
        tail = (1.0 - top_logprobs.exp().sum(-1)).clamp(min=0.0)  # from fp32 log-probs, before rounding
        for name, array in (("ids", top_ids.numpy().astype(id_dtype)), ("logprobs", top_logprobs.numpy().astype(np.float16)),
                            ("tail", tail.numpy().astype(np.float32))):
            path = temp / f"{name}-{chunk_index:05d}.npy"
            np.save(path, array)
            files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        on_batch(min(chunk_start + chunk_windows, len(ids)), len(ids))
    positions = len(ids) * (ids.shape[1] - 1)
    meta = {
        "format_version": FORMAT_VERSION, "fingerprint": fingerprint, "k": k, "temperature": temperature,
        "vocab_size": vocab_size, "windows": len(ids), "seq_len": ids.shape[1], "chunk_windows": chunk_windows,
        "id_dtype": np.dtype(id_dtype).name, "positions": positions,
        "bytes_per_token": sum(entry["bytes"] for entry in files.values()) / max(1, positions), "files": files,
    }
    (temp / META_NAME).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    temp.rename(folder)
    return TeacherCache(folder)


def cache_is_valid(folder: Path, fingerprint: str) -> bool:
    try:
        return json.loads((folder / META_NAME).read_text(encoding="utf-8"))["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError):
        return False


class TeacherCache:
    """Read side: ``rows(window_indices)`` -> (ids (B, L-1, k) long, log-probs (B, L-1, k) fp32)."""

    def __init__(self, folder: Path, fingerprint: str | None = None):
        self.folder = folder
        try:
            self.meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{folder} is not a teacher cache (no readable {META_NAME}); run `edgedistill cache-teacher`") from None
        if fingerprint is not None and self.meta.get("fingerprint") != fingerprint:
            raise UserError(f"teacher cache {folder} was built for another teacher, data, k or temperature; "
                            "rerun `edgedistill cache-teacher` with this recipe")
        self.k, self.temperature = self.meta["k"], self.meta["temperature"]
        self.chunk_windows = self.meta["chunk_windows"]
        self._open: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def bytes_per_token(self) -> float:
        return float(self.meta["bytes_per_token"])

    def _chunk(self, index: int):
        if index not in self._open:
            arrays = []
            for name in ("ids", "logprobs", "tail"):
                path = self.folder / f"{name}-{index:05d}.npy"
                entry = self.meta["files"].get(path.name)
                if entry is None or not path.is_file() or sha256_file(path) != entry["sha256"]:
                    raise UserError(f"teacher cache file {path} is missing or corrupted (checksum mismatch); "
                                    "delete the cache folder and rerun `edgedistill cache-teacher`")
                arrays.append(np.load(path, mmap_mode="r"))
            self._open[index] = tuple(arrays)
        return self._open[index]

    def rows(self, window_indices) -> tuple[torch.Tensor, torch.Tensor]:
        ids, logprobs = [], []
        for window in (int(i) for i in window_indices):
            chunk_ids, chunk_logprobs, _ = self._chunk(window // self.chunk_windows)
            ids.append(torch.from_numpy(np.asarray(chunk_ids[window % self.chunk_windows], dtype=np.int64)))
            logprobs.append(torch.from_numpy(np.asarray(chunk_logprobs[window % self.chunk_windows], dtype=np.float32)))
        return torch.stack(ids), torch.stack(logprobs)

    def mean_tail_mass(self) -> float:
        """Average teacher probability outside the cached top-k (0 = the k tokens hold it all)."""
        chunks = range((self.meta["windows"] + self.chunk_windows - 1) // self.chunk_windows)
        total = sum(float(np.asarray(self._chunk(i)[2], dtype=np.float64).sum()) for i in chunks)
        return total / max(1, self.meta["positions"])
