import math

import torch

from edgedistill.hf import load_model
from edgedistill.pipeline.evaluate import compare_on_heldout


def test_a_model_compared_with_itself(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    sequences = torch.randint(0, model.config.vocab_size, (3, 17))

    metrics = compare_on_heldout(model, model, sequences, batch_size=2)

    with torch.no_grad():
        logits = model(sequences).logits[:, :-1]  # (B, L-1, V)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), sequences[:, 1:].reshape(-1))
    assert metrics["student_teacher_val_top1_agreement"] == 1.0
    assert abs(metrics["student_teacher_val_kl"]) < 1e-6
    assert set(compare_on_heldout(model, model, sequences, split="test")) >= {"student_teacher_kl", "student_test_ppl"}
    assert math.isclose(metrics["student_val_ppl"], math.exp(nll.item()), rel_tol=1e-5)
    assert metrics["student_val_ppl"] == metrics["teacher_val_ppl"]
    assert 0.0 <= metrics["student_val_top1"] <= 1.0


def test_qa_scores_count_only_answer_tokens(tiny_llama_dir):
    from edgedistill.hf import load_tokenizer
    from edgedistill.pipeline.evaluate import answer_tokens, qa_scores

    model, tokenizer = load_model(tiny_llama_dir), load_tokenizer(tiny_llama_dir)
    pairs = [{"prompt": "Return the absolute value", "answer": " of a number."},
             {"prompt": "json.dumps(obj)\n", "answer": "Serialize obj to a JSON formatted str."}]

    scores = qa_scores(model, tokenizer, pairs, max_len=64)

    nll, hits, count = 0.0, 0, 0
    for pair in pairs:  # plain reference: score the tokens of the joined text past the prompt
        ids = tokenizer(pair["prompt"] + pair["answer"], add_special_tokens=False)["input_ids"]
        prompt_ids = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids  # these prompts tokenize as a prefix of the joined text
        prompt_len = len(prompt_ids)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        for position in range(prompt_len, len(ids)):
            log_probs = torch.log_softmax(logits[position - 1], -1)
            nll -= log_probs[ids[position]].item()
            hits += int(logits[position - 1].argmax().item() == ids[position])
            count += 1
    assert scores["qa_tokens"] == count
    assert math.isclose(scores["qa_ppl"], math.exp(nll / count), rel_tol=1e-5)
    assert scores["qa_top1"] == hits / count
    ids, first = answer_tokens(tokenizer, "term\n   ", "A definition.", max_len=64)
    assert tokenizer.decode(ids[first:]).endswith("A definition.")  # whitespace merged into the answer's first token
    assert not tokenizer.decode(ids[:first]).endswith("A")
    ids, first = answer_tokens(tokenizer, "x" * 200, " tail", max_len=16)
    assert len(ids) == 16 and tokenizer.decode(ids[first:]).strip() == "tail"  # the prompt is cut, not the answer


def test_quality_report_retention(tiny_llama_dir):
    from edgedistill.hf import load_tokenizer
    from edgedistill.pipeline.evaluate import quality_report

    model, tokenizer = load_model(tiny_llama_dir), load_tokenizer(tiny_llama_dir)
    with torch.no_grad():  # greedy text of the model itself: every next token is its top-1
        windows = model.generate(torch.tensor([[5], [9]]), max_new_tokens=11, min_new_tokens=11, do_sample=False)
    report = quality_report(model, model, tokenizer, windows, [{"prompt": "a", "answer": " b c"}], max_len=32)
    assert report["teacher_test_top1"] == 1.0 and report["retention_top1"] == 1.0
    assert report["student_qa_top1"] == report["teacher_qa_top1"] and report["qa_pairs"] == 1
    assert report["student_test_ppl"] == report["teacher_test_ppl"] and report["test_tokens"] == 22


def test_load_qa_pairs_errors_name_the_problem(tmp_path):
    import pytest

    from edgedistill.errors import UserError
    from edgedistill.pipeline.evaluate import load_qa_pairs

    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"prompt": "q"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 1 lacks"):
        load_qa_pairs(str(bad))
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1 is not JSON"):
        load_qa_pairs(str(bad))
    with pytest.raises(UserError, match="is not a file"):
        load_qa_pairs(str(tmp_path / "missing.jsonl"))
    assert len(load_qa_pairs("builtin:pydocs-qa", limit=3)) == 3
