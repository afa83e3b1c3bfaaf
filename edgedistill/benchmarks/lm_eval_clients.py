"""lm-eval's OpenAI-compatible clients pointed at one ``edgedistill serve`` process.

``local-completions`` tokenizes with the served model's HF tokenizer and sends token ids
(``tokenized_requests``): the server scores exactly the ids lm-eval's ``hf`` backend would.
Text requests would be re-tokenized by the server, and lm-eval's split of context and
continuation, counted in its own tokens, could then shift at their boundary. BOS is added
where the tokenizer adds it by itself, as lm-eval's ``hf`` backend and our server's text
prompts do. ``local-chat-completions`` sends chat messages; the server renders them with
the model's chat template. Importing this module imports lm-eval.
"""

from __future__ import annotations

from pathlib import Path

from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

MAX_STOP_STRINGS = 4  # what OpenAI-compatible servers accept, ours included
RETRIES = 1  # one attempt: the server is a local process, a failed request would fail again


class ServedCompletions(LocalCompletionsAPI):
    """``local-completions`` with two request fields adapted to ``edgedistill serve``."""

    def _create_payload(self, messages, generate=False, gen_kwargs=None, seed=1234, eos=None, **kwargs) -> dict:
        payload = super()._create_payload(messages, generate=generate, gen_kwargs=gen_kwargs, seed=seed, eos=eos,
                                          **kwargs)
        if generate:  # a task's stop strings plus EOS's text may exceed the server's limit
            payload["stop"] = payload["stop"][:MAX_STOP_STRINGS]  # as lm-eval's own chat client cuts them
        else:
            # lm-eval reads the prompt's log-probs as every entry but the last, the one token it asks to
            # generate; where that token is EOS the server stops without listing it, and the last
            # continuation token's log-prob would be dropped instead
            payload["ignore_eos"] = True
        return payload


def tokenizer_adds_bos(model_dir: Path) -> bool:
    """Whether the folder's HF tokenizer puts BOS before a text by itself."""
    from edgedistill.hf import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    return tokenizer.bos_token_id is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]


def completions_lm(base_url: str, model_name: str, model_dir: Path, context_length: int) -> ServedCompletions:
    """The client of ``{base_url}/completions`` (``base_url`` ends in /v1), tokenizing with
    the HF tokenizer in ``model_dir``; prompts are cut from the left to ``context_length`` - 1."""
    return ServedCompletions(
        base_url=f"{base_url}/completions", model=model_name, tokenizer=str(model_dir), tokenizer_backend="huggingface",
        tokenized_requests=True, add_bos_token=tokenizer_adds_bos(model_dir), max_length=context_length,
        batch_size=1, num_concurrent=1, max_retries=RETRIES)


def chat_lm(base_url: str, model_name: str, context_length: int) -> LocalChatCompletion:
    """The client of ``{base_url}/chat/completions``."""
    return LocalChatCompletion(base_url=f"{base_url}/chat/completions", model=model_name, max_length=context_length,
                               num_concurrent=1, max_retries=RETRIES)
