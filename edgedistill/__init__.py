"""edgedistill: turn a large Hugging Face causal LM into a small, quantized, device-ready student."""

__version__ = "0.1.0"
