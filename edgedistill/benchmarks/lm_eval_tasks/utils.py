"""``process_results`` / ``process_docs`` of the pydocs QA tasks, named by ``!function
utils.<name>`` in their YAMLs (lm-eval imports this file by path)."""

from __future__ import annotations

import math

DISTRACTORS = 3  # wrong answers beside the true one in pydocs_qa_mc


def scored_text(doc: dict) -> str:
    """The text whose likelihood lm-eval scores: the answer, after any whitespace that ends
    the prompt (lm-eval moves a context's trailing whitespace into the continuation)."""
    prompt = doc["prompt"]
    return prompt[len(prompt.rstrip()):] + doc["answer"]


def answer_loglikelihood(doc: dict, results: list) -> dict:
    """Per answer, from lm-eval's ``(loglikelihood, is_greedy)`` of it given its prompt:

    - ``loglikelihood``: log p(answer | prompt) in nats, summed over its tokens;
    - ``bits_per_byte``: -loglikelihood / ln 2 / UTF-8 bytes of the scored text, the
      tokenizer-independent cost of the answer (so models with different tokenizers compare).

    Both are averaged over answers (aggregation ``mean``: lm-eval's closed-form stderr). No
    exponential is taken, so nothing overflows as lm-eval's ``perplexity`` does on long answers.
    """
    loglikelihood, _ = results[0]
    return {"loglikelihood": loglikelihood,
            "bits_per_byte": -loglikelihood / math.log(2) / len(scored_text(doc).encode("utf-8"))}


def multiple_choice_docs(dataset):
    """Each question with its true answer and the answers of the next ``DISTRACTORS``
    questions of the file that differ from it (neighbours share a source: glossary terms
    compete with glossary terms, FAQ with FAQ); the true one sits at position index mod 4
    so that ties never favour it. Adds ``choices`` (texts) and ``gold`` (index)."""
    answers = dataset["answer"]

    def add_choices(doc: dict, index: int) -> dict:
        others: list[str] = []
        step = 1
        while len(others) < DISTRACTORS:
            candidate = answers[(index + step) % len(answers)]
            if candidate != doc["answer"] and candidate not in others:
                others.append(candidate)
            step += 1
        gold = index % (DISTRACTORS + 1)
        return {"choices": others[:gold] + [doc["answer"]] + others[gold:], "gold": gold}

    return dataset.map(add_choices, with_indices=True)
