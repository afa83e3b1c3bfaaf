"""Tiny random teachers, one per architecture-table row (GQA everywhere), and their BPE tokenizer.

They exist so the whole chain runs offline in seconds and tests have real, standard HF
models to work on. The tokenizer is a byte-level BPE trained on the shipped corpus with
the GPT-2 pre-tokenizer regex, which llama.cpp knows as ``gpt-2``.
"""

from __future__ import annotations

from pathlib import Path

TINY_CORPUS = Path(__file__).with_name("data") / "tiny_corpus.txt"
SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
TOKENIZER_VOCAB_SIZE = 512

# Architecture facts of each builtin teacher; hidden 64 with 4 query / 2 KV heads (GQA).
# tiny-mistral is the Llama layout under Mistral's model_type (a supported family).
TINY_TEACHERS: dict[str, dict] = {
    "tiny-llama": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "tie_word_embeddings": True, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
    },
    "tiny-mistral": {
        "model_type": "mistral", "hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "tie_word_embeddings": False, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "sliding_window": None,
    },
    "tiny-qwen2": {
        "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": False, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    },
    # Llama 3.x: rope_scaling llama3 (original context 64, so the parity texts reach the
    # rescaled low frequencies) and a large rope_theta
    "tiny-llama3": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "tie_word_embeddings": True, "max_position_embeddings": 512,
        "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
    },
    # Qwen3: q/k RMSNorms per head, head_dim independent of hidden / heads (4 x 32 != 64)
    "tiny-qwen3": {
        "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 32, "tie_word_embeddings": True, "max_position_embeddings": 512,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    },
    # Gemma 3 text: (1 + w) RMSNorms with pre/post-FFW norms, q/k norms, embedding scale
    # sqrt(hidden), GeGLU, head_dim 32 independent of hidden, sliding-window layers (window
    # 16, shorter than the parity texts) interleaved with full-attention ones
    "tiny-gemma3": {
        "model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 32, "query_pre_attn_scalar": 32, "tie_word_embeddings": True,
        "max_position_embeddings": 512, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "rms_norm_eps": 1e-6, "sliding_window": 16, "hidden_activation": "gelu_pytorch_tanh",
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    },
    # Phi-3: fused qkv_proj and gate_up_proj
    "tiny-phi3": {
        "model_type": "phi3", "hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": False, "max_position_embeddings": 512, "original_max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "sliding_window": None,
    },
}


# rows whose norms carry facts an exporter must keep (Gemma's 1 + w, per-head q/k norms); the
# older rows keep the initialisation their tests were tuned on
PERTURBED_NORMS = ("tiny-qwen3", "tiny-gemma3")


def train_tokenizer(text: str | list[str], vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """Byte-level BPE over ``text`` -> a ``PreTrainedTokenizerFast`` with BOS/EOS/PAD.

    ``text``: one string (trained paragraph by paragraph) or a list of documents (trained
    whole, so paragraph breaks get merged tokens too). No BOS is added automatically: the
    same ids come out of HF, the runtime and llama.cpp.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.split("\n\n") if isinstance(text, str) else text, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_input_names=["input_ids", "attention_mask"],
        **SPECIAL_TOKENS,
    )


def build_tiny_teacher(name: str, out_dir: Path, seed: int = 0, tokenizer_vocab: int | None = None) -> Path:
    """Write a seeded random ``name`` teacher (config, safetensors, tokenizer) to ``out_dir``;
    ``tokenizer_vocab``: another BPE vocabulary size (a model of another tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    tokenizer = train_tokenizer(TINY_CORPUS.read_text(encoding="utf-8"), tokenizer_vocab or TOKENIZER_VOCAB_SIZE)
    facts = dict(TINY_TEACHERS[name])
    config = AutoConfig.for_model(
        facts.pop("model_type"),
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **facts,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # HF initializes biases to zero; real ones are not, and tests must see them
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.5)
        if name in PERTURBED_NORMS:  # norms start at 1 (Gemma: 0 for 1 + w); perturbed, so an exporter
            for param_name, param in model.named_parameters():  # that drops a norm or its offset cannot pass
                if "norm" in param_name:
                    param.add_(torch.randn_like(param) * 0.1)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    ).save_pretrained(out_dir)
    return out_dir
