"""The names recipe keys choose from, as data: validating a recipe imports no torch.

Each tuple names the keys of a registry that lives in a torch-side module (the function
or class behind each name); ``tests/test_config.py`` pins that the two agree.
"""

PRUNE_STRATEGIES = ("mlp", "width", "depth", "ratios")  # pipeline/prune_targets.py:STRATEGIES
IMPORTANCE_METRICS = ("activation", "magnitude", "taylor")  # pipeline/importance.py:IMPORTANCE_METRICS
KD_OBJECTIVES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")  # distill/losses.py:KD_OBJECTIVES
CROSS_OBJECTIVES = ("uld", "gold")  # distill/cross_tokenizer.py: teacher and student of different vocabularies
FEATURE_LOSSES = ("mse", "cosine")  # distill/features.py:FEATURE_LOSSES
DISTILL_MODES = ("logit", "sequence", "on_policy")  # distill/stage.py: the trainer each mode runs
