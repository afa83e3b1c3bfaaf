"""Build stages. Each exposes ``run(cfg, inp, out_dir) -> Artifact`` (see DESIGN.md)."""
