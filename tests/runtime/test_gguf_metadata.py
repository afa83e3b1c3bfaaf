from gguf import GGUFReader

from edgedistill.exporters.gguf import export_gguf
from edgedistill.runtime.gguf_metadata import read_gguf_metadata


def test_pure_python_reader_agrees_with_gguf_py(tiny_qwen2_dir, tmp_path):
    path = tmp_path / "m.gguf"
    export_gguf(tiny_qwen2_dir, path, "f16")
    reader = GGUFReader(path)

    everything = read_gguf_metadata(path)
    some = read_gguf_metadata(path, {"qwen2.context_length", "edgedistill.quantization", "absent.key"})

    assert some == {"qwen2.context_length": 512, "edgedistill.quantization": "f16"}
    assert everything["general.architecture"] == "qwen2"
    assert everything["tokenizer.ggml.tokens"] == [str(t) for t in reader.fields["tokenizer.ggml.tokens"].contents()]
    assert set(everything) == {k for k in reader.fields if not k.startswith("GGUF.")}
