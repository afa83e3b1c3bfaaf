"""Resolve a parameter budget into concrete student shapes (a standard HF config).

Strategies (``prune.strategy``), each keeping the teacher's head_dim and GQA ratio:

* ``mlp``: shrink only the MLP width (homogeneous across layers).
* ``width``: shrink hidden size and MLP width by the same factor (Minitron's width axis).
* ``depth``: drop whole layers (ShortGPT).
* ``ratios``: no budget; keep ``prune.ratios.mlp`` of the MLP width, ``prune.ratios.hidden``
  of the hidden size and ``prune.ratios.layers`` of the layers (rounded down to
  ``round_to`` / whole layers, at least one of each).

``prune.kv_heads_keep`` first removes a fraction of the KV groups (with their query
heads) in every strategy. Sizes are multiples of ``prune.round_to``; the solver picks the
largest shape whose parameter count, counted exactly on a meta-device model built from
the rewritten config, is at most ``target_params`` of the teacher.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

from edgedistill.errors import UserError
from edgedistill.hf import head_dim_of


@dataclass(frozen=True)
class PruneShape:
    hidden_size: int
    intermediate_size: int
    num_key_value_heads: int
    num_hidden_layers: int


def shape_of(config) -> PruneShape:
    return PruneShape(config.hidden_size, config.intermediate_size, config.num_key_value_heads, config.num_hidden_layers)


def config_for(config, shape: PruneShape):
    """The teacher's config rewritten to ``shape`` (head_dim explicit, GQA ratio kept)."""
    new = copy.deepcopy(config)
    new.head_dim = head_dim_of(config)
    ratio = config.num_attention_heads // config.num_key_value_heads
    new.hidden_size, new.intermediate_size = shape.hidden_size, shape.intermediate_size
    new.num_key_value_heads, new.num_attention_heads = shape.num_key_value_heads, shape.num_key_value_heads * ratio
    new.num_hidden_layers = shape.num_hidden_layers
    if getattr(config, "layer_types", None):
        new.layer_types = config.layer_types[: shape.num_hidden_layers]
    return new


def parameters_of(config, shape: PruneShape) -> int:
    """Exact unique parameter count of a model with ``shape``, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_for(config, shape))
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _largest(candidates: list[PruneShape], config, budget: float) -> PruneShape | None:
    """The first (largest) candidate within ``budget``, by bisection over a descending list."""
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if parameters_of(config, candidates[middle]) <= budget:
            best, high = candidates[middle], middle - 1
        else:
            low = middle + 1
    return best


def _mlp_candidates(base: PruneShape, prune_cfg) -> list[PruneShape]:
    round_to = prune_cfg.round_to
    sizes = range(base.intermediate_size // round_to * round_to, 0, -round_to)
    return [dataclasses.replace(base, intermediate_size=size) for size in sizes]


def _width_candidates(base: PruneShape, prune_cfg) -> list[PruneShape]:
    round_to, shapes = prune_cfg.round_to, []
    for hidden in range(base.hidden_size // round_to * round_to, 0, -round_to):
        inter = max(round_to, base.intermediate_size * hidden // base.hidden_size // round_to * round_to)
        shapes.append(dataclasses.replace(base, hidden_size=hidden, intermediate_size=inter))
    return shapes


def _depth_candidates(base: PruneShape, prune_cfg) -> list[PruneShape]:
    return [dataclasses.replace(base, num_hidden_layers=n) for n in range(base.num_hidden_layers, 0, -1)]


def _ratio_shape(base: PruneShape, prune_cfg) -> PruneShape:
    def rounded(size: int, keep: float) -> int:  # never above the teacher's size
        return min(size, max(prune_cfg.round_to, int(size * keep) // prune_cfg.round_to * prune_cfg.round_to))

    return dataclasses.replace(
        base,
        hidden_size=base.hidden_size if prune_cfg.ratios.hidden == 1.0 else rounded(base.hidden_size, prune_cfg.ratios.hidden),
        intermediate_size=rounded(base.intermediate_size, prune_cfg.ratios.mlp),
        num_hidden_layers=max(1, int(base.num_hidden_layers * prune_cfg.ratios.layers)),
    )


def requested_dimensions(prune_cfg) -> list[str]:
    """The dimensions (``architectures.PRUNE_DIMENSIONS``) a prune config may cut, known
    before any model is loaded (preflight checks them against the architecture row)."""
    cuts = {
        "heads": prune_cfg.kv_heads_keep < 1.0,
        "mlp": prune_cfg.strategy in ("mlp", "width") or (prune_cfg.strategy == "ratios" and prune_cfg.ratios.mlp < 1.0),
        "hidden": prune_cfg.strategy == "width" or (prune_cfg.strategy == "ratios" and prune_cfg.ratios.hidden < 1.0),
        "depth": prune_cfg.strategy == "depth" or (prune_cfg.strategy == "ratios" and prune_cfg.ratios.layers < 1.0),
    }
    return [dimension for dimension, cut in cuts.items() if cut]


@dataclass(frozen=True)
class Strategy:
    """Candidate shapes, largest first; ``uses_budget``: pick the largest within target_params."""

    candidates: Callable[[PruneShape, object], list[PruneShape]]
    uses_budget: bool = True


STRATEGIES: dict[str, Strategy] = {
    "mlp": Strategy(_mlp_candidates),
    "width": Strategy(_width_candidates),
    "depth": Strategy(_depth_candidates),
    "ratios": Strategy(lambda base, prune_cfg: [_ratio_shape(base, prune_cfg)], uses_budget=False),
}


def resolve_shape(config, teacher_params: int, prune_cfg) -> PruneShape:
    """The student shape for ``prune_cfg`` (strategy, target_params, kv_heads_keep, round_to)."""
    if prune_cfg.round_to > config.intermediate_size:
        raise UserError(
            f"prune.round_to={prune_cfg.round_to} exceeds the teacher's intermediate_size {config.intermediate_size}; lower prune.round_to"
        )
    hidden_cut = prune_cfg.strategy == "width" or (prune_cfg.strategy == "ratios" and prune_cfg.ratios.hidden < 1.0)
    if hidden_cut and prune_cfg.round_to > config.hidden_size:
        raise UserError(
            f"prune.round_to={prune_cfg.round_to} exceeds the teacher's hidden_size {config.hidden_size}; lower prune.round_to"
        )
    groups = max(1, math.floor(config.num_key_value_heads * prune_cfg.kv_heads_keep))  # rounded down, like sizes
    base = dataclasses.replace(shape_of(config), num_key_value_heads=groups)
    strategy = STRATEGIES[prune_cfg.strategy]
    candidates = strategy.candidates(base, prune_cfg)
    if not strategy.uses_budget:
        return candidates[0]
    shape = _largest(candidates, config, prune_cfg.target_params * teacher_params)
    if shape is None:
        smallest = parameters_of(config, candidates[-1]) / teacher_params
        raise UserError(
            f"prune.target_params={prune_cfg.target_params} is unreachable with prune.strategy={prune_cfg.strategy}: "
            f"its smallest student is {smallest:.2f} of the teacher; raise prune.target_params or choose another strategy"
        )
    return shape


def teacher_config(source: dict):
    """The teacher's HF config from a resolved teacher source, without loading weights."""
    from transformers import AutoConfig

    if source["kind"] == "builtin":
        from edgedistill.demo.tiny import SPECIAL_TOKENS, TINY_TEACHERS, TOKENIZER_VOCAB_SIZE

        facts = dict(TINY_TEACHERS[source["name"]])
        # the BPE trainer gives the special tokens the first ids, in SPECIAL_TOKENS order
        special = {f"{name}_id": index for index, name in enumerate(SPECIAL_TOKENS)}
        return AutoConfig.for_model(facts.pop("model_type"), vocab_size=TOKENIZER_VOCAB_SIZE, **special, **facts)
    return AutoConfig.from_pretrained(source["path"])


def describe_plan(prune_cfg, source: dict) -> str:
    """One line for ``--dry-run``: teacher shape -> student shape and parameter counts."""
    config = teacher_config(source)
    teacher = shape_of(config)
    teacher_params = parameters_of(config, teacher)
    student = resolve_shape(config, teacher_params, prune_cfg)
    student_params = parameters_of(config, student)
    parts = ", ".join(f"{name} {getattr(teacher, field)} -> {getattr(student, field)}" for name, field in (
        ("hidden", "hidden_size"), ("mlp", "intermediate_size"), ("kv heads", "num_key_value_heads"), ("layers", "num_hidden_layers")))
    return (f"prune ({prune_cfg.strategy}): {parts}; params {teacher_params:,} -> {student_params:,} "
            f"({student_params / teacher_params:.2f}x)")
