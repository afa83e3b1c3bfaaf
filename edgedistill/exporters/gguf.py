"""GGUF writer for llama.cpp, driven by the architecture table in ``arch.py``.

Every 2-D weight gets the GGML type its quantization's ``TensorMix`` names (llama.cpp's
per-tensor recipe: the output projection at 6 bits, some attn_v/ffn_down at 6 bits in the
``_M`` types), quantized by llama.cpp's own ``ggml_quantize_chunk`` (``ggml_quant``) with
an importance matrix measured on calibration text where the quantization asks for one.
One-dimensional tensors (norms, biases) stay f32, as llama.cpp expects. A type whose
blocks do not divide a tensor's rows (k-quants block 256 input channels, the rest 32)
falls back as llama.cpp's quantizer does (``GGML_FALLBACK``: Q4_K -> Q5_0, Q6_K -> Q8_0,
...); every fallen-back tensor is listed with its actual type in the returned facts (and
so the manifest and report). The per-tensor type counts are read back from the file.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from edgedistill.architectures import GGUFLayout, architecture, gguf_layout, gguf_tensor_name, head_dim_of, rope_type
from edgedistill.errors import UserError
from edgedistill.exporters.formats import GGML_FALLBACK, GGUF_QUANTIZATIONS
from edgedistill.exporters.pretokenizers import llama_cpp_pre_tokenizer

_LAYER = re.compile(r"^blk\.(\d+)\.")


def permute_for_llama_rope(weight: np.ndarray, num_heads: int, head_dim: int) -> np.ndarray:
    """Reorder Q/K rows from HF's rotate-half layout to llama.cpp's interleaved pairs.

    weight: (num_heads * head_dim, in) or (num_heads * head_dim,) -> same shape.
    """
    return weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class StudentGGUFWriter:
    """Writes one HF model folder as one GGUF file, in a fixed order of states.

    ``new -> metadata -> tokenizer -> tensors -> closed``; calling a step out of order
    raises ``RuntimeError`` naming the state it expected.
    """

    def __init__(self, model_dir: Path, out_path: Path, quantization: str, importance: dict | None = None):
        """``importance``: {HF weight name: (in_features,) mean squared input}, from
        ``importance_matrix``; used by the types that take one, ignored by the others."""
        import gguf

        if quantization not in GGUF_QUANTIZATIONS:
            raise UserError(f"unknown GGUF quantization '{quantization}'; supported: {', '.join(GGUF_QUANTIZATIONS)}")
        self.model_dir, self.out_path, self.quantization = Path(model_dir), Path(out_path), quantization
        self.quant = GGUF_QUANTIZATIONS[quantization]
        self.importance = importance or {}
        self.config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self.row = architecture(self.config.get("model_type", ""))
        self.spec: GGUFLayout = gguf_layout(self.config)
        check_gguf_config(self.config)
        self.tied = bool(self.config.get("tie_word_embeddings"))
        self.writer = gguf.GGUFWriter(self.out_path, self.spec.arch)
        self.tensor_types: Counter[str] = Counter()
        self.fallbacks: list[dict] = []
        self.state = "new"

    def _advance(self, expected: str, new: str) -> None:
        if self.state != expected:
            raise RuntimeError(f"GGUF writer is in state '{self.state}', expected '{expected}' before '{new}'")
        self.state = new

    @property
    def head_dim(self) -> int:
        return head_dim_of(self.config)

    def add_metadata(self) -> None:
        import gguf

        self._advance("new", "metadata")
        cfg, w = self.config, self.writer
        scaling = cfg.get("rope_scaling") or {}
        w.add_name(self.model_dir.name)
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_head_count_kv(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(int(self.head_dim * cfg.get("partial_rotary_factor", 1.0)))
        w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
        if rope_type(cfg) == "linear":  # positions divided by the factor, as HF's linear scaling does
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(scaling["factor"]))
        # llama3 scaling is a per-frequency divisor, written as the rope_freqs tensor (add_tensors)
        if self.spec.sliding_window:  # per-layer pattern: llama.cpp's built-in period would not survive depth pruning
            w.add_sliding_window(int(cfg["sliding_window"]))
            w.add_sliding_window_pattern([kind == "sliding_attention" for kind in cfg["layer_types"]])
            w.add_rope_freq_base_swa(float(cfg.get("rope_local_base_freq", 10000.0)))
        elif isinstance(cfg.get("sliding_window"), int):
            w.add_sliding_window(int(cfg["sliding_window"]))
        w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
        w.add_vocab_size(cfg["vocab_size"])
        w.add_file_type(getattr(gguf.LlamaFileType, self.quant.file_type))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_string("edgedistill.quantization", self.quantization)

    def add_tokenizer(self) -> None:
        """Tokenizer metadata by kind (``TOKENIZER_KINDS``): byte-level BPE as llama.cpp's
        ``gpt2`` model with the ``gpt-2`` pre-tokenizer, or SentencePiece-style BPE with
        byte fallback (Llama/Mistral ``tokenizer.json``) as its ``llama`` model with scores."""
        self._advance("metadata", "tokenizer")
        data = json.loads((self.model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        kind = check_gguf_tokenizer(data, self.model_dir / "tokenizer.json", self.config["vocab_size"])
        TOKENIZER_KINDS[kind](self, data)
        self._add_special_ids()

    def _vocab_table(self, data: dict, normal_score) -> tuple[list[str], list[float], list]:
        """Tokens, scores and types for every id up to vocab_size (padding rows UNUSED)."""
        import gguf

        size = self.config["vocab_size"]
        tokens, scores = [f"[PAD{i}]" for i in range(size)], [0.0] * size
        types = [gguf.TokenType.UNUSED] * size
        for token, index in data["model"]["vocab"].items():
            tokens[index], types[index], scores[index] = token, gguf.TokenType.NORMAL, normal_score(index)
        for added in data.get("added_tokens", []):
            tokens[added["id"]] = added["content"]
            types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
        return tokens, scores, types

    def _add_gpt2_bpe(self, data: dict) -> None:
        """Byte-level BPE with the llama.cpp pre-tokenizer that splits text as the
        tokenizer.json's does (``pretokenizers.PRE_TOKENIZERS``)."""
        pre = llama_cpp_pre_tokenizer(data.get("pre_tokenizer"), str(self.model_dir / "tokenizer.json"))
        tokens, _, types = self._vocab_table(data, lambda index: 0.0)
        merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
        w = self.writer
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)

    def _add_sentencepiece_bpe(self, data: dict) -> None:
        """llama.cpp's SPM tokenizer merges the adjacent pair whose merged piece scores
        highest; BPE merges the pair of lowest rank, so a piece scores minus the rank of
        the first merge that makes it (pieces no merge makes score below every merge).
        Byte-fallback pieces ``<0xNN>`` are typed BYTE. The space prefix is the
        normalizer's (Llama 2 prepends "▁", Gemma does not)."""
        import gguf

        vocab, ranks = data["model"]["vocab"], {}
        for rank, merge in enumerate(data["model"]["merges"]):
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            ranks.setdefault(vocab.get(left + right), rank)
        unmerged = -float(len(ranks) + 1)
        tokens, scores, types = self._vocab_table(data, lambda index: -float(ranks[index]) if index in ranks else unmerged)
        for index, token in enumerate(tokens):
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">") and types[index] != gguf.TokenType.UNUSED:
                types[index] = gguf.TokenType.BYTE
        w = self.writer
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(_prepends_space(data))
        unk = data["model"].get("unk_token")
        if unk in data["model"]["vocab"]:
            w.add_unk_token_id(data["model"]["vocab"][unk])

    def _add_special_ids(self) -> None:
        w = self.writer
        for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id), ("pad_token_id", w.add_pad_token_id)):
            if isinstance(self.config.get(key), int):
                add(self.config[key])
        # what the tokenizer does for other llama.cpp programs; edgedistill's runtime and
        # pipeline never add special tokens implicitly (same ids everywhere)
        w.add_add_bos_token(self._tokenizer_adds_bos())
        w.add_add_eos_token(False)
        template = self._chat_template()
        if template:
            w.add_chat_template(template)

    def _tokenizer_adds_bos(self) -> bool:
        return tokenizer_adds_bos(self.model_dir)

    def _chat_template(self) -> str | None:
        """The tokenizer's chat template (chat_template.jinja or tokenizer_config.json), if any."""
        from edgedistill.runtime.folder_meta import folder_template_source

        return folder_template_source(self.model_dir)

    def add_tensors(self) -> None:
        from safetensors import safe_open

        self._advance("tokenizer", "tensors")
        files = sorted(self.model_dir.glob("*.safetensors"))
        if not files:
            raise UserError(f"{self.model_dir} has no .safetensors weights; save the model with safe_serialization=True")
        for file in files:
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():
                    if name == "lm_head.weight" and self.tied:
                        continue  # llama.cpp reuses token_embd when output.weight is absent
                    gguf_name = gguf_tensor_name(self.spec, name)
                    self._add_tensor(gguf_name, self._prepared(name, handle.get_tensor(name)), self._importance_of(name))
        if rope_type(self.config) == "llama3":
            self.writer.add_tensor("rope_freqs.weight", llama3_rope_factors(self.config))
            self.tensor_types["f32"] += 1

    def _importance_of(self, hf_name: str):
        if not self.quant.importance:
            return None
        if hf_name == "model.embed_tokens.weight" and not self.tied:
            return None  # an untied embedding is a lookup table: no input activations weigh its columns
        return self.importance.get(hf_name)

    def _prepared(self, hf_name: str, tensor) -> np.ndarray:
        array = tensor.float().numpy()
        if self.spec.norm_offset and hf_name.endswith("norm.weight"):
            array = array + np.float32(self.spec.norm_offset)
        if self.spec.permute_qk and ".self_attn.q_proj." in hf_name:
            array = permute_for_llama_rope(array, self.config["num_attention_heads"], self.head_dim)
        elif self.spec.permute_qk and ".self_attn.k_proj." in hf_name:
            kv_heads = self.config.get("num_key_value_heads", self.config["num_attention_heads"])
            array = permute_for_llama_rope(array, kv_heads, self.head_dim)
        return array

    def _tensor_type(self, name: str, array: np.ndarray):
        """The mix's type for this tensor, after llama.cpp's fallback for rows it cannot block."""
        import gguf

        if array.ndim != 2:
            return gguf.GGMLQuantizationType.F32
        layer = _LAYER.match(name)
        wanted = self.quant.mix.type_for(name, int(layer.group(1)) if layer else None,
                                         self.config["num_hidden_layers"], self.tied)
        actual = wanted
        while gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[actual]][0] > 1 and \
                array.shape[1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[actual]][0]:
            actual = GGML_FALLBACK[actual]
        if actual != wanted:
            self.fallbacks.append({"tensor": name, "wanted": wanted.lower(), "actual": actual.lower(),
                                   "row": int(array.shape[1])})
        return gguf.GGMLQuantizationType[actual]

    def _add_tensor(self, name: str, array: np.ndarray, importance: np.ndarray | None = None) -> None:
        import gguf

        from edgedistill.exporters.ggml_quant import quantize

        qtype = self._tensor_type(name, array)
        if qtype == gguf.GGMLQuantizationType.F32:
            self.writer.add_tensor(name, array.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            self.writer.add_tensor(name, array.astype(np.float16))
        else:
            self.writer.add_tensor(name, quantize(array, qtype, importance), raw_dtype=qtype)
        self.tensor_types[qtype.name.lower()] += 1

    def close(self) -> dict:
        self._advance("tensors", "closed")
        self.writer.write_header_to_file()
        self.writer.write_kv_data_to_file()
        self.writer.write_tensors_to_file()
        self.writer.close()
        return {"gguf_arch": self.spec.arch, "tensor_types": dict(sorted(self.tensor_types.items())),
                "fallbacks": self.fallbacks}


def llama3_rope_factors(config: dict) -> np.ndarray:
    """(rotary_dim / 2,) f32 divisors of the default RoPE frequencies that give HF's
    llama3-scaled ones (llama.cpp's ``rope_freqs`` tensor: theta_i / factor_i). Taken from
    transformers' own RoPE initialisation, so the GGUF rotates as the torch model does."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = AutoConfig.for_model(**config)
    scaled, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    default, _ = ROPE_INIT_FUNCTIONS["default"](hf_config, "cpu")
    if attention_factor != 1.0:
        raise UserError(f"llama3 rope_scaling with attention factor {attention_factor} has no GGUF form")
    return (default / scaled).float().numpy().astype(np.float32)


def check_gguf_config(config: dict) -> None:
    """Refuse (UserError, one line) a config whose GGUF file llama.cpp would compute
    differently from the torch model; called by preflight and by the writer."""
    row = architecture(config.get("model_type", ""))
    kind = rope_type(config)
    if kind not in row.rope_scaling:
        supported = ", ".join("none" if k is None else k for k in row.rope_scaling)
        raise UserError(f"GGUF export of {row.model_type} does not reproduce rope_scaling type '{kind}' "
                        f"(supported: {supported}); export ONNX only (export.gguf=[])")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if config.get(key) is not None:
            raise UserError(f"GGUF export of {row.model_type} does not write {key}={config[key]}; export ONNX only (export.gguf=[])")
    scalar = config.get("query_pre_attn_scalar")
    if row.model_type == "gemma3_text" and scalar is not None and scalar != head_dim_of(config):
        raise UserError(f"llama.cpp scales Gemma 3 attention by 1/sqrt(head_dim={head_dim_of(config)}), this model by "
                        f"1/sqrt(query_pre_attn_scalar={scalar}); export ONNX only (export.gguf=[])")
    if row.gguf.sliding_window and not config.get("layer_types"):
        raise UserError(f"{row.model_type} config has no layer_types; save it with transformers >= 4.53 to export GGUF")


def tokenizer_adds_bos(model_dir: Path) -> bool:
    """Whether the HF tokenizer puts BOS before a text: tokenizer_config's ``add_bos_token``
    when it says, else a post-processor template that opens with a special token (Llama 3's
    <|begin_of_text|>, Gemma's <bos>)."""
    config_path = Path(model_dir) / "tokenizer_config.json"
    if config_path.is_file():
        said = json.loads(config_path.read_text(encoding="utf-8")).get("add_bos_token")
        if isinstance(said, bool):
            return said
    data = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    post = data.get("post_processor") or {}
    templates = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    return any(t.get("type") == "TemplateProcessing" and t.get("single") and "SpecialToken" in t["single"][0]
               for t in templates)


def check_gguf_tokenizer(data: dict, path, vocab_size: int | None = None) -> str:
    """The tokenizer kind of a tokenizer.json that llama.cpp can reproduce (``TOKENIZER_KINDS``);
    UserError naming what it cannot (the kind, the pre-tokenizer part, or an id beyond the
    model's ``vocab_size`` embedding rows)."""
    ids = [*(data.get("model") or {}).get("vocab", {}).values(), *(t["id"] for t in data.get("added_tokens", []))]
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise UserError(f"{path}: token id {max(ids)} has no embedding row (vocab_size {vocab_size}); resize the "
                        "model's embeddings to the tokenizer (resize_token_embeddings) and save it again")
    kind = tokenizer_kind(data)
    if kind is None:
        raise UserError("GGUF export supports byte-level BPE (GPT-2 style) and SentencePiece-style BPE with byte "
                        f"fallback (Llama / Gemma style) tokenizers; {path} is neither; export ONNX only (export.gguf=[])")
    if kind == "gpt2":
        llama_cpp_pre_tokenizer(data.get("pre_tokenizer"), str(path))
    return kind


def _prepends_space(data: dict) -> bool:
    """Whether the tokenizer puts "▁" before the text (a Prepend normalizer or a Metaspace
    pre-tokenizer that prepends), as llama.cpp's add_space_prefix does."""
    normalizer, pre = data.get("normalizer") or {}, data.get("pre_tokenizer") or {}
    parts = normalizer.get("normalizers", [normalizer]) if normalizer.get("type") == "Sequence" else [normalizer]
    if any(part.get("type") == "Prepend" for part in parts):
        return True
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(p.get("type") == "Metaspace" and (p.get("prepend_scheme", "always") != "never" and p.get("add_prefix_space", True))
               for p in pres)


def tokenizer_kind(data: dict) -> str | None:
    """``gpt2`` (byte-level BPE, alone or after a Split / Digits step), ``llama`` (SentencePiece-style BPE with byte fallback and
    the metaspace ▁), or None for kinds we cannot describe to llama.cpp."""
    model, pre, normalizer = data.get("model") or {}, data.get("pre_tokenizer") or {}, data.get("normalizer") or {}
    if model.get("type") != "BPE":
        return None
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if any(step.get("type") == "ByteLevel" for step in steps):
        return "gpt2"  # which regex splits the text first is the pre-tokenizer's (pretokenizers.py)
    metaspace = pre.get("type") == "Metaspace" or "▁" in json.dumps(normalizer, ensure_ascii=False)
    return "llama" if model.get("byte_fallback") and metaspace else None


TOKENIZER_KINDS = {"gpt2": StudentGGUFWriter._add_gpt2_bpe, "llama": StudentGGUFWriter._add_sentencepiece_bpe}


def export_gguf(model_dir: Path, out_path: Path, quantization: str, importance: dict | None = None) -> dict:
    """Write ``model_dir`` as a GGUF file; returns facts for the manifest (arch, tensor types
    read back from the written file, fallen-back tensors). The file is written beside its
    target and renamed into place, so a failed export leaves nothing behind."""
    if quantization not in GGUF_QUANTIZATIONS:
        raise UserError(f"unknown GGUF quantization '{quantization}'; supported: {', '.join(GGUF_QUANTIZATIONS)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        writer = StudentGGUFWriter(model_dir, partial, quantization, importance)
        writer.add_metadata()
        writer.add_tokenizer()
        writer.add_tensors()
        facts = writer.close()
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return {**facts, "tensor_types": tensor_types(out_path)}


def tensor_types(path: Path) -> dict[str, int]:
    """Per-tensor GGML types counted from the file itself (what llama.cpp will load)."""
    import gguf

    return dict(sorted(Counter(t.tensor_type.name.lower() for t in gguf.GGUFReader(path).tensors).items()))
