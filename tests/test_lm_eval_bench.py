"""lm-evaluation-harness as the bench's independent judge: the shipped pydocs QA tasks'
metrics, loglikelihoods through `edgedistill serve` pinned to lm-eval's own hf backend,
`edgedistill bench --lm-eval` on a tiny build, and bad task specs."""

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from edgedistill.benchmarks.lm_eval_bench import load_tasks, metric_values, report_table, with_error
from edgedistill.benchmarks.lm_eval_tasks import utils as task_utils

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TINY_BUILD = ["distill.steps=5", "export.onnx=[fp32]", "export.gguf=[f16]", "bench.enabled=false"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedistill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, **OFFLINE})


def write_task(folder, name: str, rows: list[dict], body: str):
    """A task YAML over a local JSONL of ``rows`` (absolute data_files: lm-eval reads them from the cwd)."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    yaml_file = folder / f"{name}.yaml"
    head = f"task: {name}\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {data}}}}}\ntest_split: test\n"
    yaml_file.write_text(head + textwrap.dedent(body), encoding="utf-8")
    return yaml_file


# ---- the shipped tasks' metrics and the results' shape


def test_answer_loglikelihood_is_per_answer_nats_and_bits_per_byte():
    doc = {"prompt": "What is x?\n\n", "answer": "ab"}  # scored text "\n\nab": 4 bytes
    metrics = task_utils.answer_loglikelihood(doc, [(-4 * math.log(2), False)])
    assert metrics == pytest.approx({"loglikelihood": -4 * math.log(2), "bits_per_byte": 1.0})
    assert task_utils.scored_text({"prompt": "`>>>`\n", "answer": "é"}) == "\né"


def test_multiple_choice_docs_add_distinct_neighbours_with_the_answer_at_index_mod_4():
    from datasets import Dataset

    answers = ["a0", "a1", "a1", "a0", "a4", "a5"]  # duplicates are skipped as distractors
    docs = task_utils.multiple_choice_docs(Dataset.from_list([{"answer": a} for a in answers]))
    for index, doc in enumerate(docs):
        assert doc["gold"] == index % 4 and doc["choices"][doc["gold"]] == answers[index]
        assert len(set(doc["choices"])) == 4
    assert docs[1]["choices"] == ["a0", "a1", "a4", "a5"]  # after a1: a1 (same), a0, a4, a5


def test_metric_values_drop_the_none_filter_and_unavailable_numbers():
    row = {"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A", "exact_match,strict-match": 1,
           "x,none": float("nan")}
    assert metric_values(row) == {"acc": 0.5, "acc_stderr": None, "exact_match,strict-match": 1.0, "x": None}


def test_report_table_has_a_row_per_model_and_value_with_stderr_cells():
    lm_eval = {"tasks": ["pydocs_qa"], "settings": {"limit": 5}, "models": {
        "teacher": {"pydocs_qa": {"loglikelihood": -95.1234, "loglikelihood_stderr": 3.21, "bits_per_byte": 1.2345,
                                  "bits_per_byte_stderr": 0.0456, "samples": 5, "seconds": 1.0}},
        "gguf-f16": {"pydocs_qa": {"error": "HTTP 400: too long"}}}}
    table = report_table(lm_eval)
    assert table["headers"] == ["model", "pydocs_qa loglikelihood", "pydocs_qa bits_per_byte"]
    assert table["rows"] == [["teacher", "-95.1 ± 3.2", "1.234 ± 0.046"], ["gguf-f16", "missing", "missing"]]
    assert table["notes"][0].startswith("samples per task: pydocs_qa 5 (limit 5); ± is lm-eval's standard error")
    assert table["notes"][1:] == ["gguf-f16: HTTP 400: too long"]
    assert report_table(None) is None
    assert [with_error(*pair) for pair in ((-557.39, 248.2), (0.3333, 0.3333), (1234.5, None), (0.5, 0.0))] == [
        "-557 ± 248", "0.33 ± 0.33", "1234", "0.5 ± 0"]


# ---- the pin: our server through lm-eval's local-completions = lm-eval's hf backend


@pytest.fixture(scope="module")
def eos_after_answer_dir(tiny_llama_dir, tmp_path_factory):
    """The tiny Llama whose EOS is the token it predicts after the first QA answer: served,
    it stops there, without listing that token."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgedistill.hf import load_tokenizer
    from edgedistill.pipeline.evaluate import load_qa_pairs

    folder = tmp_path_factory.mktemp("eos-after-answer") / "model"
    shutil.copytree(tiny_llama_dir, folder)
    pair = load_qa_pairs("builtin:pydocs-qa", 1)[0]
    ids = load_tokenizer(folder)(pair["prompt"] + pair["answer"], add_special_tokens=False).input_ids
    with torch.no_grad():
        following = int(AutoModelForCausalLM.from_pretrained(folder).eval()(torch.tensor([ids])).logits[0, -1].argmax())
    for name in ("config.json", "generation_config.json"):
        config = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**config, "eos_token_id": following}))
    return folder


def per_sample_loglikelihoods(model, task, manager) -> list[tuple[float, bool]]:
    """lm-eval's (loglikelihood, is_greedy) of every request of the task's first 6 docs."""
    import lm_eval

    output = lm_eval.simple_evaluate(model=model, tasks=[task.spec.load], task_manager=manager, limit=6,
                                     log_samples=True, bootstrap_iters=0)
    return [tuple(resp[0]) for sample in output["samples"][task.names[0]] for resp in sample["resps"]]


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["tiny_llama_dir", "eos_after_answer_dir"])
@pytest.mark.parametrize("task", ["pydocs_qa", "pydocs_qa_mc"])
def test_served_loglikelihoods_equal_lm_evals_hf_backend(folder, task, request):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from edgedistill.benchmarks.lm_eval_clients import completions_lm
    from edgedistill.benchmarks.served import ServedModel

    model_dir = request.getfixturevalue(folder)
    manager, (loaded,) = load_tasks((task,))
    expected = per_sample_loglikelihoods(HFLM(pretrained=str(model_dir), dtype="float32", device="cpu"), loaded, manager)
    with ServedModel(model_dir, "tiny", threads=2) as server:
        served = per_sample_loglikelihoods(completions_lm(server.url, "tiny", model_dir, 512), loaded, manager)
        plain_client = LocalCompletionsAPI(base_url=f"{server.url}/completions", model="tiny", tokenizer=str(model_dir),
                                           max_length=512)
        plain = per_sample_loglikelihoods(plain_client, loaded, manager)
    assert len(served) == len(expected) >= 6
    for (loglikelihood, greedy), (reference, reference_greedy) in zip(served, expected):
        assert abs(loglikelihood - reference) < 1e-3 and greedy == reference_greedy
    # why completions_lm sends ignore_eos: without it, the answer followed by EOS loses its last token
    worst_plain = max(abs(a[0] - b[0]) for a, b in zip(plain, expected))
    assert (worst_plain > 0.1) == (folder == "eos_after_answer_dir"), worst_plain


@pytest.mark.slow
def test_a_chat_task_goes_through_the_chat_template_and_a_refusal_is_that_tasks_error(chatml_llama_dir, tiny_llama_dir,
                                                                                         tmp_path):
    from edgedistill.benchmarks.lm_eval_bench import evaluate_target
    from edgedistill.benchmarks.suite import Target

    rows = [{"question": "What does len() return?", "answer": "the length"}, {"question": "Is 1 odd?", "answer": "yes"}]
    body = """\
        output_type: generate_until
        doc_to_text: "{{question}}"
        doc_to_target: "{{answer}}"
        generation_kwargs: {until: ["\\n"], max_gen_toks: 4}
        metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
        metadata: {chat: true}
        """
    manager, tasks = load_tasks((str(write_task(tmp_path, "chat_qa", rows, body)),))
    assert tasks[0].chat
    chat_row, plain_row = (evaluate_target(Target(name, "student", "hf", path=folder), folder, tasks, manager, 0, 2,
                                           lambda message: None)["chat_qa"]
                           for name, folder in (("chatml", chatml_llama_dir), ("plain", tiny_llama_dir)))
    assert chat_row["samples"] == 2 and 0.0 <= chat_row["exact_match"] <= 1.0 and chat_row["seconds"] > 0
    assert plain_row["error"].startswith("HTTP 400: ") and "no chat template" in plain_row["error"]


# ---- `edgedistill bench --lm-eval` on a tiny build


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm-eval") / "tiny"
    result = cli("build", "tiny", "--out", out, *[arg for setting in TINY_BUILD for arg in ("--set", setting)])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_bench_with_lm_eval_reports_every_task_on_every_model(built, tmp_path):
    rows = [{"question": f"Is {n} even?", "choices": ["yes", "no"], "gold": n % 2} for n in range(4)]
    own = write_task(tmp_path, "parity_mc", rows, """\
        output_type: multiple_choice
        doc_to_text: "{{question}}"
        doc_to_choice: choices
        doc_to_target: gold
        metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]
        """)
    result = cli("bench", built, "--lm-eval", "builtin:pydocs-qa", "--lm-eval", own, "--lm-eval-limit", 3)
    assert result.returncode == 0, result.stderr[-3000:]
    lm_eval = json.loads((built / "bench" / "results.json").read_text())["lm_eval"]
    assert lm_eval["tasks"] == ["pydocs_qa", "parity_mc"] and lm_eval["settings"]["limit"] == 3
    assert list(lm_eval["models"]) == ["teacher", "onnx-fp32", "gguf-f16"]
    for tasks in lm_eval["models"].values():
        qa, parity = tasks["pydocs_qa"], tasks["parity_mc"]
        assert qa["loglikelihood"] < 0 < qa["bits_per_byte"] and qa["bits_per_byte_stderr"] > 0 and qa["samples"] == 3
        assert parity["acc"] in (0.0, 1 / 3, 2 / 3, 1.0) and parity["samples"] == 3 and parity["seconds"] > 0
    # the onnx and gguf artifacts are one student: the same answers cost about the same
    artifacts = [lm_eval["models"][name]["pydocs_qa"]["bits_per_byte"] for name in ("onnx-fp32", "gguf-f16")]
    assert artifacts[0] == pytest.approx(artifacts[1], rel=0.01)
    recipe = json.loads((built / "manifest.json").read_text())["recipe"]["bench"]
    assert recipe["lm_eval"] == ["builtin:pydocs-qa", str(own)] and recipe["lm_eval_limit"] == 3
    report = (built / "bench" / "report.md").read_text()
    table = report[report.index("## lm-evaluation-harness"):].split("\n\n")[1].splitlines()
    assert table[0] == "| model | pydocs_qa loglikelihood | pydocs_qa bits_per_byte | parity_mc acc |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| teacher", "| onnx-fp32", "| gguf-f16"]
    assert "<h2>lm-evaluation-harness</h2>" in (built / "bench" / "report.html").read_text()
    assert "lm-evaluation-harness" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "message"), [
    ("pydocs_qq", "bench.lm_eval 'pydocs_qq' is not an lm-eval task"),
    ("/no/such/task.yaml", "bench.lm_eval '/no/such/task.yaml' is not a file"),
    ("hub", "needs the network or the HF datasets cache"),
])
def test_a_bad_task_spec_exits_2_with_one_line(built, tmp_path, spec, message):
    if spec == "hub":  # offline, a dataset that is only on the hub cannot load
        spec = write_task(tmp_path, "remote", [], "output_type: loglikelihood\n")
        spec.write_text(spec.read_text().replace("dataset_path: json", "dataset_path: edgedistill-tests/not-local"))
    result = cli("bench", built, "--lm-eval", spec)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
