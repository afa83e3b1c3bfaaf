import dataclasses

import pytest

from edgedistill.config import Recipe, to_dict
from edgedistill.errors import UserError
from edgedistill.recipe_loader import bundled_recipes, from_dict, load_recipe
from edgedistill.recipe_reference import recipe_keys


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_every_bundled_recipe_loads(name):
    recipe = load_recipe(name)

    assert recipe.name == name
    assert recipe.description


def test_defaults_round_trip_through_dict():
    recipe = Recipe()

    assert from_dict(Recipe, to_dict(recipe)) == recipe


def test_every_field_has_a_reason():
    rows = list(recipe_keys())

    assert {key for key, *_ in rows} >= {"teacher", "distill.alpha", "prune.target_params", "export.gguf"}
    assert all(reason for *_, reason in rows)


def test_overrides_apply_with_yaml_types():
    recipe = load_recipe("tiny", ["distill.alpha=0.3", "export.gguf=[f16, q8_0]", "distill.steps=2", "bench.enabled=false"])

    assert recipe.distill.alpha == 0.3
    assert recipe.export.gguf == ("f16", "q8_0")
    assert recipe.distill.steps == 2
    assert recipe.bench.enabled is False


def test_exponent_floats_are_floats_in_yaml_and_flags(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("distill:\n  learning_rate: 1e-4\n")

    assert load_recipe(str(path)).distill.learning_rate == 1e-4
    assert load_recipe("tiny", ["distill.learning_rate=3e-4"]).distill.learning_rate == 3e-4
    with pytest.raises(UserError, match="must be int"):
        load_recipe("tiny", ["distill.steps=1e3"])


def test_a_recipe_that_exports_nothing_is_rejected():
    with pytest.raises(UserError, match="export.onnx and export.gguf are both empty"):
        load_recipe("tiny", ["export.onnx=[]", "export.gguf=[]"])


def test_a_topk_cache_rejects_what_it_cannot_train():
    assert load_recipe("tiny", ["distill.teacher_topk=64", "distill.objective=forward_kl"]).distill.teacher_topk == 64
    with pytest.raises(UserError, match="supports objective forward_kl only, not 'jsd'"):
        load_recipe("tiny", ["distill.teacher_topk=64", "distill.objective=jsd"])
    with pytest.raises(UserError, match="feature KD .* needs the online teacher"):
        load_recipe("tiny", ["distill.teacher_topk=64", "distill.objective=forward_kl", "distill.feature_weight=0.5"])


def test_recipe_is_frozen():
    recipe = load_recipe("tiny")

    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.distill.alpha = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.alpah=0.3", "recipe key 'distill.alpah' is unknown; did you mean 'distill.alpha'?"),
        ("distil.alpha=0.3", "recipe key 'distil' is unknown; did you mean 'distill'?"),
        ("distill.alpha=abc", "recipe key 'distill.alpha' must be float, got str 'abc'"),
        ("distill.steps=2.5", "recipe key 'distill.steps' must be int, got float 2.5"),
        ("distill.scale_by_t2=1", "recipe key 'distill.scale_by_t2' must be bool, got int 1"),
        ("distill.alpha=1.5", "recipe key 'distill.alpha' must be <= 1.0, got 1.5"),
        ("distill.temperature=0", "recipe key 'distill.temperature' must be > 0.0, got 0.0"),
        ("export.gguf=[q9]", "recipe key 'export.gguf' has unsupported value 'q9'; allowed: f32, f16, q8_0, q4_0"),
        ("distill.objective=mse", "recipe key 'distill.objective' has unsupported value 'mse'; allowed: forward_kl, reverse_kl, jsd, skew_kl, skew_reverse_kl"),
        ("distill=3", "recipe key 'distill' must be a section (mapping), got int"),
        ("novalue", "--set expects key=value"),
        ("distill.alpha=.nan", "recipe key 'distill.alpha' must be a finite number, got nan"),
        ("distill.temperature=.inf", "recipe key 'distill.temperature' must be a finite number, got inf"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(UserError) as error:
        load_recipe("tiny", [override])

    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_yaml_file_recipe_and_its_errors(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("teacher: builtin:tiny-qwen2\ndistill:\n  steps: 3\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("distill: [unclosed\n")

    recipe = load_recipe(str(good))

    assert (recipe.name, recipe.teacher, recipe.distill.steps) == ("mine", "builtin:tiny-qwen2", 3)
    with pytest.raises(UserError, match="must be a mapping"):
        load_recipe(str(bad))
    with pytest.raises(UserError, match="is not valid YAML"):
        load_recipe(str(broken))
    with pytest.raises(UserError, match="neither a bundled recipe"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_registry_names_are_the_keys_of_the_registries_they_name():
    from edgedistill import registry_names as names
    from edgedistill.pipeline.distill.features import FEATURE_LOSSES
    from edgedistill.pipeline.distill.losses import KD_OBJECTIVES
    from edgedistill.pipeline.importance import IMPORTANCE_METRICS
    from edgedistill.pipeline.prune_targets import STRATEGIES

    assert names.PRUNE_STRATEGIES == tuple(STRATEGIES)
    assert names.IMPORTANCE_METRICS == tuple(IMPORTANCE_METRICS)
    assert names.KD_OBJECTIVES == tuple(KD_OBJECTIVES)
    assert names.FEATURE_LOSSES == tuple(FEATURE_LOSSES)


def test_loading_and_validating_every_bundled_recipe_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from edgedistill.recipe_loader import bundled_recipes, load_recipe; "
            "[load_recipe(name) for name in bundled_recipes()]; "
            "print(sorted(m for m in ('torch', 'transformers', 'onnx', 'gguf') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_schedule_is_one_switch_under_the_command_lines_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("distill: {steps: 1}\nschedules:\n  cpu: {distill.steps: 10, distill.batch_size: 2}\n"
                      "  gpu: {distill.steps: 1000, distill.precision: bf16}\n")
    cpu = load_recipe(str(recipe))  # the first schedule by default
    assert (cpu.schedule, cpu.distill.steps, cpu.distill.batch_size) == ("cpu", 10, 2)
    gpu = load_recipe(str(recipe), ["schedule=gpu", "distill.steps=7"])
    assert (gpu.schedule, gpu.distill.steps, gpu.distill.precision, gpu.distill.batch_size) == ("gpu", 7, "bf16", 8)
    with pytest.raises(UserError, match="schedule 'tpu' is not one of recipe r.yaml's schedules: cpu, gpu"):
        load_recipe(str(recipe), ["schedule=tpu"])
    with pytest.raises(UserError, match="has no schedules"):
        load_recipe("tiny", ["schedule=gpu"])


def test_an_alternative_renames_the_build_and_applies_over_the_schedule():
    base = load_recipe("smollm2-docs")
    lora = load_recipe("smollm2-docs", ["alternative=lora-sft"])
    assert (lora.name, lora.alternative, lora.schedule) == ("smollm2-docs-lora-sft", "lora-sft", "cpu")
    assert lora.distill.lora_rank == 16 and lora.distill.answers.source == "reference" and lora.distill.alpha == 0
    assert lora.distill.steps == base.distill.steps and lora.distill.answers.questions == base.distill.answers.questions
    gpu = load_recipe("smollm2-docs", ["schedule=gpu", "alternative=ce-only"])
    assert gpu.distill.steps == load_recipe("smollm2-docs", ["schedule=gpu"]).distill.steps and gpu.distill.alpha == 0
    with pytest.raises(UserError, match="alternative 'x' is not one of recipe smollm2-docs.yaml's alternatives"):
        load_recipe("smollm2-docs", ["alternative=x"])
