"""distill.mode logit | sequence | on_policy, with the recipe's teacher and with a teacher
behind a real `edgedistill serve` on 127.0.0.1 (distill.teacher_api), end to end on the tiny
recipe."""

import json
from pathlib import Path

import pytest

from edgedistill.artifacts import read_manifest
from edgedistill.build import build
from edgedistill.cli import main
from edgedistill.recipe_loader import load_recipe
from edgedistill.exporters.gguf import export_gguf
from tests.benchmarks.fake_api import fixed_answer_api
from tests.runtime.server_process import running_server
from tests.test_datagen import _Proxy

FAST = ["distill.steps=6", "bench.enabled=false", "export.onnx=[]", "distill.temperature=1", "distill.prompt_tokens=16",
        "distill.response_tokens=24", "distill.sequence.windows=96"]


def distill_metrics(out: Path) -> dict:
    return read_manifest(out)["stages"]["distill"]["artifact"]["metrics"]


@pytest.fixture(scope="module")
def teacher_api(tiny_llama_dir, tmp_path_factory):
    """The tiny Llama (the tiny recipe's tokenizer) served as an f32 GGUF, behind a proxy
    that answers the first attempt of every request 503: every API path must retry its way through."""
    import threading
    from http.server import ThreadingHTTPServer

    path = tmp_path_factory.mktemp("api-teacher") / "teacher.gguf"
    export_gguf(tiny_llama_dir, path, "f32")
    with running_server(path, "--model-name", "big-teacher") as server:
        _Proxy.upstream, _Proxy.flaky, _Proxy.delay, _Proxy.count, _Proxy.seen = server.url, True, 0.0, 0, set()
        proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{proxy.server_port}/v1"
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.slow
def test_sequence_mode_trains_on_teacher_responses_and_reuses_them(tmp_path):
    build(load_recipe("tiny", [*FAST, "distill.mode=sequence"]), tmp_path)
    metrics = distill_metrics(tmp_path)
    assert metrics["teacher_responses_generated"] == 96 and metrics["teacher_topk_aligned_share"] == 1.0
    assert metrics["teacher_responses_kept"] + metrics["teacher_responses_filtered"] == 96
    assert {"student_val_ppl", "student_teacher_val_top1_agreement", "sequence_student_val_ppl"} <= set(metrics)
    (responses,) = (tmp_path / "teacher-responses").glob("*.jsonl")
    assert len(responses.read_text().splitlines()) == 96
    build(load_recipe("tiny", [*FAST, "distill.mode=sequence", "distill.steps=8"]), tmp_path)  # new run, same data
    assert distill_metrics(tmp_path)["teacher_responses_generated"] == 0
    card = (tmp_path / "student" / "README.md").read_text()
    assert "on teacher responses (sparse top-k)" in card


@pytest.mark.slow
def test_on_policy_mode_mixes_student_samples_into_training(tmp_path):
    build(load_recipe("tiny", [*FAST, "distill.mode=on_policy", "distill.objective=jsd", "distill.on_policy.lmbda=0.5"]), tmp_path)
    metrics = distill_metrics(tmp_path)
    assert 0 < metrics["on_policy_steps"] < 6 and metrics["on_policy_generated_tokens"] > 0
    log = [json.loads(line) for line in (tmp_path / "student" / "train_log.jsonl").read_text().splitlines()]
    assert sum(row["on_policy"] for row in log) == metrics["on_policy_steps"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["logit", "sequence", "on_policy"])
def test_every_mode_distills_from_a_teacher_behind_an_api(teacher_api, tmp_path, mode):
    sets = [*FAST, f"distill.mode={mode}", f"teacher_api.url={teacher_api}", "teacher_api.model=big-teacher",
            "data.max_tokens=8000"]
    if mode != "sequence":
        sets.append("distill.teacher_topk=4")
    build(load_recipe("tiny", sets), tmp_path)
    metrics = distill_metrics(tmp_path)
    if mode == "sequence":  # token texts map back to ids wherever the text round-trips (this random teacher
        # also writes byte pieces that decode to U+FFFD, which no tokenizer can turn back into the same ids)
        from edgedistill.hf import load_tokenizer
        from edgedistill.pipeline.distill.sequence_data import TokenMap, response_example

        tokenizer = load_tokenizer(tmp_path / "student")
        (responses,) = (tmp_path / "teacher-responses").glob("*.jsonl")
        rows = [json.loads(line) for line in responses.read_text().splitlines()]
        kept = [row for row in rows if row["kept"]]  # an empty response (EOS first) is filtered out
        assert len(rows) == 96 and kept and all(row["logprobs"] for row in kept)
        token_map = TokenMap(tokenizer)
        for row in kept:
            assert response_example(row, tokenizer, token_map).aligned == ("\ufffd" not in row["response"])
    else:
        assert metrics["teacher_topk_aligned_share"] == 1.0  # ids sent, same tokenizer: every position lines up
    if mode == "on_policy":
        assert metrics["on_policy_steps"] > 0 and metrics["on_policy_topk_aligned_share"] > 0.5
    if mode == "logit":
        (scores,) = (tmp_path / "teacher-scores").glob("*.jsonl")
        rows = [json.loads(line) for line in scores.read_text().splitlines()]
        assert len({row["id"] for row in rows}) == len(rows) and all(row["prompt_logprobs"] for row in rows)


COT_ANSWER = {"choices": [{"index": 0, "text": "Lists are arrays.\nThey grow.\nAnswer: a mutable sequence",
                           "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 11}}


@pytest.mark.slow
def test_a_cot_template_trains_rationale_and_answer_tasks_and_edited_prompts_rerun_the_stage(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is a list ({i})?"}) + "\n" for i in range(60)))
    out = tmp_path / "build"
    with fixed_answer_api(200, COT_ANSWER) as url:
        sets = [*FAST, "distill.mode=sequence", f"teacher_api.url={url}", f"distill.sequence.prompts={prompts}",
                "distill.sequence.template=step-by-step", "distill.sequence.cot_tasks=true", "data.seq_len=32"]
        build(load_recipe("tiny", sets), out)
        metrics = distill_metrics(out)
        (responses,) = (out / "teacher-responses").glob("*.jsonl")
        rows = [json.loads(line) for line in responses.read_text().splitlines()]
        assert metrics["teacher_responses_kept"] == 60 and all(row["answer"] == "a mutable sequence" for row in rows)
        assert all("Let's think step by step" in row["prompt"] for row in rows)
        windows = metrics["sequence_train_windows"]
        stages = []
        build(load_recipe("tiny", sets), out, lambda name, status, _s: stages.append((name, status)))
        assert ("distill", "cached") in stages
        prompts.write_text(prompts.read_text() + json.dumps({"prompt": "One more?"}) + "\n")
        stages.clear()
        build(load_recipe("tiny", sets), out, lambda name, status, _s: stages.append((name, status)))
        assert ("distill", "ran") in stages and distill_metrics(out)["teacher_responses_generated"] == 1
    without_tasks = [s for s in sets if not s.startswith("distill.sequence.cot_tasks")]
    with fixed_answer_api(200, COT_ANSWER) as url:
        build(load_recipe("tiny", [*without_tasks[:1], *[s if "teacher_api" not in s else f"teacher_api.url={url}"
                                                          for s in without_tasks[1:]]]), tmp_path / "plain")
    assert distill_metrics(tmp_path / "plain")["sequence_train_windows"] < windows  # the two tasks add windows


@pytest.mark.parametrize("sets, needle", [
    (["teacher_api.url=http://h/v1"], "distill.teacher_topk to 1-20"),
    (["distill.mode=sequence", "distill.temperature=2"], "distill.temperature=1"),
    (["distill.mode=on_policy", "distill.teacher_topk=8"], "no offline cache holds"),
    (["distill.mode=on_policy", "distill.prompt_tokens=64"], "leaves no room to generate"),
    (["distill.mode=ring"], "distill.mode"),
    (["distill.mode=sequence", "teacher_api.url=ftp://x"], "not an http(s) URL"),
    (["distill.mode=sequence", "distill.sequence.cot_tasks=true"], "need distill.sequence.template"),
    (["distill.mode=sequence", "distill.sequence.template=nope"], "template nope: not a builtin"),
    (["distill.mode=sequence", "distill.temperature=1", "distill.sequence.prompts=/no/such.jsonl"], "does not exist"),
    (["distill.mode=on_policy", "distill.prompt_tokens=16", "distill.response_tokens=600"],
     "distill.response_tokens needs 616 tokens of context"),
])
def test_modes_refuse_what_they_cannot_do(tmp_path, capsys, sets, needle):
    args = ["build", "tiny", "--out", str(tmp_path / "out")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    assert needle in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failing_teacher_api_stops_the_build_with_one_line_and_exit_2(tmp_path, capsys):
    with fixed_answer_api(503, {"error": {"message": "down"}}) as url:
        code = main(["build", "tiny", "--out", str(tmp_path), *[a for s in FAST for a in ("--set", s)],
                     "--set", "distill.mode=sequence", "--set", f"teacher_api.url={url}",
                     "--set", "teacher_api.retries=1"])
    err = capsys.readouterr().err
    assert code == 2 and "prompts failed at teacher_api.url" in err and "Traceback" not in err
    assert "HTTP 503" in err  # the first failure is the API's own answer, not "not sent"
    assert "distill" not in read_manifest(tmp_path)["stages"]
