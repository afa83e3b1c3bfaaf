"""Device formats: ONNX (onnxruntime) and GGUF (llama.cpp), each gated by a parity check."""
