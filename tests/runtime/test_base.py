"""The backend-independent generation loop, driven by a scripted backend.

The scripted model is not a stand-in for onnxruntime or llama.cpp (those are tested
for real in test_runtime.py); it pins the loop's own logic: stop strings that span
tokens, characters split across tokens, EOS, and timings.
"""

from __future__ import annotations

import numpy as np

from edgedistill.runtime.base import Model

PIECES = {1: b"ab", 2: b"c|", 3: b"de", 4: "é".encode()[:1], 5: "é".encode()[1:], 6: b"!", 9: b""}
EOS = 9


class ScriptedModel(Model):
    """Always predicts the next token of ``script``; token bytes come from PIECES."""

    format = "scripted"
    eos_token_id = EOS
    context_length = 64

    def __init__(self, script: list[int]):
        self.script, self.position = script, -1

    def encode(self, text):
        return [6] * len(text)

    def decode(self, token_ids):
        return b"".join(PIECES[t] for t in token_ids).decode("utf-8", errors="replace")

    def reset(self):
        self.position = -1  # the prompt's _append predicts script[0]

    def _next_logits(self):
        logits = np.zeros(10)
        logits[self.script[min(self.position, len(self.script) - 1)]] = 1.0
        return logits

    def _append(self, token_ids):
        self.position += 1
        return self._next_logits()

    def _all_logits(self, token_ids):
        return np.stack([self._next_logits() for _ in token_ids])


def test_a_stop_string_spanning_tokens_is_held_back_and_cut():
    model = ScriptedModel([1, 2, 3, 6, 6])

    chunks = list(model.stream("x", max_tokens=10, stop=["c|d"]))

    assert [c.text for c in chunks[:-1]] == ["ab", "", ""]  # "c|" might start the stop string
    assert chunks[-1].completion.text == "ab"
    assert chunks[-1].completion.finish_reason == "stop"
    assert "".join(c.text for c in chunks) == "ab"


def test_a_held_back_prefix_is_released_when_the_stop_does_not_follow():
    model = ScriptedModel([2, 6, EOS])

    chunks = list(model.stream("x", max_tokens=10, stop=["c|d"]))

    assert [c.text for c in chunks[:-1]] == ["", "c|!"]
    assert chunks[-1].completion.text == "c|!" and chunks[-1].completion.finish_reason == "stop"


def test_a_character_split_across_tokens_is_emitted_whole():
    model = ScriptedModel([4, 5, 6])

    chunks = list(model.stream("x", max_tokens=3))

    assert [c.text for c in chunks[:-1]] == ["", "é", "!"]
    assert chunks[-1].completion.finish_reason == "length"
    assert chunks[-1].completion.timings.decode_steps == 2
