"""Importance matrix for GGUF quantization: how strongly each weight column is used.

For a linear layer y = W x, rounding error in column j of W costs, to first order,
E[x_j^2] times its square: llama.cpp's ``llama-imatrix`` measures exactly that mean of the
squared inputs over calibration text, per weight matrix, and its quantizer minimizes the
column-weighted error. This is the same measurement with torch forward hooks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIBRATION_TOKENS = 8192
CALIBRATION_SEQ_LEN = 256
CALIBRATION_DOCUMENTS = 64


def calibration_windows(data_spec: str, tokenizer, tokens: int = CALIBRATION_TOKENS,
                        seq_len: int = CALIBRATION_SEQ_LEN) -> list[list[int]]:
    """Up to ``tokens`` tokens of ``data_spec`` (same forms as data.path) as windows of ``seq_len``,
    drawn from documents spread evenly over the data (not just its first pages)."""
    from edgedistill.data import load_documents, token_stream, window_bos, windows

    documents = load_documents(data_spec, key="export.calibration")
    spread = documents[:: max(1, len(documents) // CALIBRATION_DOCUMENTS)]
    stream = token_stream(spread, tokenizer, max_tokens=tokens)
    if len(stream) < 2:
        from edgedistill.errors import UserError

        raise UserError(f"export.calibration '{data_spec}' holds no text to calibrate the GGUF quantizer on; give a text "
                        "or JSONL file")
    bos = window_bos(tokenizer)  # windows open as the model was trained to see text (BOS first where it has one)
    return [window.tolist() for window in windows(stream, seq_len, prefix=bos)] or [stream]


def importance_matrix(model, token_windows: list[list[int]]) -> dict[str, np.ndarray]:
    """{HF weight name: (in_features,) mean squared input over every calibration token}.

    Every ``nn.Linear`` of the decoder is hooked; the output projection is measured on the
    decoder's final hidden states (so no (T, V) logits are computed), and a tied token
    embedding shares the output projection's entry, as it is the same matrix.
    """
    import torch

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(name: str, inputs: torch.Tensor) -> None:
        flat = inputs.detach().reshape(-1, inputs.shape[-1]).double()  # (tokens, in_features)
        sums[name] = sums.get(name, 0) + (flat * flat).sum(0)
        counts[name] = counts.get(name, 0) + flat.shape[0]

    decoder = model.get_decoder()
    handles = [
        module.register_forward_pre_hook(lambda _m, args, name=f"model.{name}.weight": record(name, args[0]))
        for name, module in decoder.named_modules() if isinstance(module, torch.nn.Linear)
    ]
    try:
        with torch.no_grad():
            for window in token_windows:
                hidden = decoder(input_ids=torch.tensor([window])).last_hidden_state  # (1, T, H)
                record("lm_head.weight", hidden)
    finally:
        for handle in handles:
            handle.remove()
    result = {name: (sums[name] / counts[name]).float().numpy() for name in sums}
    if getattr(model.config, "tie_word_embeddings", False) or _is_tied(model):
        result["model.embed_tokens.weight"] = result["lm_head.weight"]
    return result


def _is_tied(model) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


def measure(model_dir: Path, data_spec: str) -> tuple[dict[str, np.ndarray], int]:
    """Load the fp32 model at ``model_dir`` and measure its importance matrix on ``data_spec``;
    returns the matrix and the number of calibration tokens."""
    from edgedistill.hf import load_model, load_tokenizer

    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    token_windows = calibration_windows(data_spec, tokenizer)
    return importance_matrix(model, token_windows), sum(len(w) for w in token_windows)
