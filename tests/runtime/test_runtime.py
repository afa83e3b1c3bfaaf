import subprocess
import sys
import textwrap

import pytest

from edgedistill.exporters.gguf import export_gguf
from edgedistill.exporters.onnx import export_onnx
from edgedistill.runtime import detect_format, load


@pytest.fixture(scope="module")
def artifacts(tiny_llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-artifacts")
    export_gguf(tiny_llama_dir, root / "student.gguf", "f32")
    export_onnx(tiny_llama_dir, root / "onnx", "fp32")
    return {"gguf": root / "student.gguf", "onnx": root / "onnx"}


def test_import_and_generate_without_torch(artifacts):
    script = textwrap.dedent(f"""
        import sys
        import edgedistill.runtime as runtime
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "import pulled torch"
        for path in ({str(artifacts['gguf'])!r}, {str(artifacts['onnx'])!r}):
            completion = runtime.load(path).generate("The json module", max_tokens=5, ignore_eos=True)
            assert len(completion.tokens) == 5
        leaked = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        print("leaked:", leaked)
    """)

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "leaked: []" in result.stdout


def test_format_comes_from_contents_not_names(artifacts, tmp_path):
    disguised = tmp_path / "model.onnx"
    disguised.write_bytes(artifacts["gguf"].read_bytes())
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"ONNX" + b"\0" * 16)

    assert detect_format(disguised) == "gguf"
    assert detect_format(artifacts["onnx"]) == "onnx"
    with pytest.raises(ValueError, match="not a GGUF file"):
        detect_format(not_gguf)
    with pytest.raises(ValueError, match="not an ONNX model folder"):
        detect_format(tmp_path)
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "absent")


def test_both_backends_decode_the_same_greedy_tokens(artifacts):
    gguf_model, onnx_model = load(artifacts["gguf"]), load(artifacts["onnx"])

    from_gguf = gguf_model.generate("Return a new path", max_tokens=16, ignore_eos=True)
    from_onnx = onnx_model.generate("Return a new path", max_tokens=16, ignore_eos=True)

    assert from_gguf.tokens == from_onnx.tokens
    assert from_gguf.text == from_onnx.text
    assert from_gguf.finish_reason == "length"
    assert from_gguf.timings.prompt_tokens == len(gguf_model.encode("Return a new path"))
    assert from_gguf.timings.decode_steps == 15


@pytest.mark.parametrize("backend", ["gguf", "onnx"])
def test_stream_concatenates_to_the_completion(artifacts, backend):
    model = load(artifacts[backend])

    chunks = list(model.stream("The pathlib module", max_tokens=12, temperature=0.9, seed=7, ignore_eos=True))
    completion = chunks[-1].completion
    again = model.generate("The pathlib module", max_tokens=12, temperature=0.9, seed=7, ignore_eos=True)

    assert "".join(c.text for c in chunks) == completion.text
    assert [c.token for c in chunks[:-1]] == completion.tokens
    assert again.tokens == completion.tokens  # same seed, same tokens


def test_stop_strings_end_generation_and_are_not_emitted(artifacts):
    model = load(artifacts["onnx"])
    full = model.generate("The json module", max_tokens=20, ignore_eos=True)
    offset = next(k for k in range(1, len(full.text) - 2) if full.text.find(full.text[k:k + 2]) == k)
    stop = full.text[offset:offset + 2]  # first occurs at `offset`

    chunks = list(model.stream("The json module", max_tokens=20, ignore_eos=True, stop=["never-there", stop]))

    assert chunks[-1].completion.text == full.text[:offset]
    assert chunks[-1].completion.finish_reason == "stop"
    assert "".join(c.text for c in chunks) == full.text[:offset]


def test_logits_from_an_empty_cache_are_repeatable(artifacts):
    model = load(artifacts["gguf"])
    model.generate("warm the cache", max_tokens=3)

    first, second = model.logits([5, 6, 7, 8]), model.logits([5, 6, 7, 8])

    assert first.shape == (4, 512)
    assert (first == second).all()


def test_bad_requests_are_value_errors(artifacts):
    model = load(artifacts["onnx"])

    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        model.generate("x", max_tokens=0)
    with pytest.raises(ValueError, match="prompt is empty"):
        model.generate("", max_tokens=3)
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        load(artifacts["onnx"], backend="tflite")


@pytest.mark.parametrize("backend", ["gguf", "onnx"])
def test_generation_stops_at_a_full_context(artifacts, backend):
    model = load(artifacts[backend])
    def ids(count):  # valid token ids (vocab 512), `count` of them
        return [5 + i % 400 for i in range(count)]

    completion = model.generate(ids(model.context_length - 4), max_tokens=50, ignore_eos=True)

    assert model.context_length == 512
    assert len(completion.tokens) == 4 and completion.finish_reason == "length"
    with pytest.raises(ValueError, match=r"prompt has 512 tokens; the model's context holds 512"):
        model.generate(ids(512), max_tokens=1)
    with pytest.raises(ValueError, match="logits need 1 to 512 tokens"):
        model.logits(ids(513))


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_streamed_text_equals_a_whole_decode_for_a_sentencepiece_tokenizer(fmt, tmp_path):
    """Incremental detokenization over byte-fallback pieces and metaspace: sampled text at
    temperature 1.5 hits split characters and leading spaces."""
    from tests.exporters.test_gguf import _sentencepiece_style_llama

    model_dir = _sentencepiece_style_llama(tmp_path / "spm")
    path = tmp_path / "spm.gguf" if fmt == "gguf" else tmp_path / "onnx"
    export_gguf(model_dir, path, "f32") if fmt == "gguf" else export_onnx(model_dir, path, "fp32")
    model = load(path)

    for seed in range(4):
        chunks = list(model.stream("naïve café", max_tokens=40, temperature=1.5, seed=seed, ignore_eos=True))
        completion = chunks[-1].completion

        assert completion.text == model.decode(completion.tokens), seed
        assert "".join(c.text for c in chunks) == completion.text, seed


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_logprobs_are_log_softmax_of_the_raw_logits(artifacts, fmt):
    """Pinned to a plain reference: log-softmax at T = 1 of ``logits()`` over prompt +
    generated prefix, whatever penalties and temperature the sampling used."""
    import numpy as np

    model = load(artifacts[fmt])
    prompt = model.encode("The json module")
    done = model.generate(prompt, max_tokens=5, logprobs=4, ignore_eos=True, temperature=0.9, seed=1,
                          repetition_penalty=1.3)
    assert [e.token for e in done.logprobs] == done.tokens
    for step, entry in enumerate(done.logprobs):
        row = model.logits(prompt + done.tokens[:step])[-1].astype(np.float64)
        reference = row - row.max() - np.log(np.exp(row - row.max()).sum())
        assert entry.logprob == pytest.approx(reference[entry.token], abs=2e-4)
        best = np.argsort(-reference, kind="stable")[:4]
        assert [t for t, _ in entry.top] == best.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(reference[best].tolist(), abs=2e-4)
    assert model.generate(prompt, max_tokens=2).logprobs is None  # only when asked
