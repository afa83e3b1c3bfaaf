import numpy as np
import pytest

from edgedistill.runtime.sampling import SamplingParams, apply_openai_penalties, apply_repetition_penalty, sample_token


def draws(logits, params, count=2000):
    rng = np.random.default_rng(params.seed)
    return [sample_token(np.asarray(logits), [], params, rng) for _ in range(count)]


def test_greedy_is_argmax():
    assert sample_token(np.array([0.1, 2.0, -1.0, 1.9]), [], SamplingParams(), np.random.default_rng(0)) == 1


def test_top_k_one_is_greedy_at_any_temperature():
    assert set(draws([0.1, 2.0, -1.0, 1.9], SamplingParams(temperature=5.0, top_k=1, seed=1), 200)) == {1}


def test_top_k_and_top_p_restrict_the_support():
    logits = np.log([0.5, 0.3, 0.15, 0.05])

    top2 = set(draws(logits, SamplingParams(temperature=1.0, top_k=2, seed=0)))
    nucleus = set(draws(logits, SamplingParams(temperature=1.0, top_p=0.75, seed=0)))  # 0.5 + 0.3 reaches 0.75
    wider = set(draws(logits, SamplingParams(temperature=1.0, top_p=0.85, seed=0)))  # needs the third token too

    assert top2 == {0, 1}
    assert nucleus == {0, 1}
    assert wider == {0, 1, 2}


def test_sampling_follows_the_distribution_and_the_seed():
    logits = np.log([0.7, 0.2, 0.1])
    params = SamplingParams(temperature=1.0, seed=42)

    first, second = draws(logits, params), draws(logits, params)
    frequencies = np.bincount(first, minlength=3) / len(first)

    assert first == second
    assert np.allclose(frequencies, [0.7, 0.2, 0.1], atol=0.04)


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = np.array([2.0, -2.0, 1.0])

    penalized = apply_repetition_penalty(logits, [0, 1, 1], 2.0)

    assert penalized.tolist() == [1.0, -4.0, 1.0]
    assert logits.tolist() == [2.0, -2.0, 1.0]  # input untouched


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -1}, "temperature"), ({"top_k": -1}, "top_k"), ({"top_p": 0}, "top_p"),
     ({"repetition_penalty": 0}, "repetition_penalty")],
)
def test_invalid_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_openai_penalties_count_generated_tokens_only():
    logits = np.array([1.0, 1.0, 1.0, 1.0])
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)

    penalized = apply_openai_penalties(logits, [2, 2, 2, 0], params.frequency_penalty, params.presence_penalty)

    assert penalized.tolist() == [1.0 - 0.5 - 0.25, 1.0, 1.0 - 1.5 - 0.25, 1.0]
    # greedy: token 0 would win a tie with 1 (argmax takes the first); a penalty on 0 from
    # the completion moves it to 1, while a prompt-only occurrence does not
    tie = np.array([2.0, 2.0, 0.0])
    assert sample_token(tie, [0], params, np.random.default_rng(0), generated=[]) == 0
    assert sample_token(tie, [0], params, np.random.default_rng(0), generated=[0]) == 1
    with pytest.raises(ValueError, match=r"presence_penalty must be in \[-2, 2\]"):
        SamplingParams(presence_penalty=3)


def test_a_tiny_temperature_is_greedy_and_non_finite_settings_are_refused():
    logits = np.array([0.5, 3.0, 2.9])

    assert set(draws(logits, SamplingParams(temperature=1e-300, seed=0), 50)) == {1}
    with pytest.raises(ValueError, match="repetition_penalty must be a finite number"):
        SamplingParams(repetition_penalty=float("inf"))
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        SamplingParams(temperature=float("nan"))
