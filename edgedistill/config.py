"""The typed, frozen recipe schema: every key a recipe may set, with its default, its
allowed values or range and a one-line reason (``knob``).

Reading a recipe (YAML, ``--set`` overrides, schedules and alternatives, strict checks of
every value against these declarations) is ``recipe_loader``; the rules that tie keys of
different sections together are ``recipe_checks``; the key reference in the docs is
generated from here by ``recipe_reference``.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from edgedistill import registry_names as names

def registry(path: str) -> Callable[[], tuple[str, ...]]:
    """Allowed values = the keys of a registry dict ("module:NAME"), imported only when a
    field using it is validated (the registries live in torch-side modules)."""
    module, name = path.split(":")
    return lambda: tuple(getattr(importlib.import_module(module), name))


def knob(default: Any, doc: str, *, choices: Callable[[], tuple[str, ...]] | None = None,
         low: float | None = None, high: float | None = None, low_open: bool = False) -> Any:
    """A recipe field: its default, a one-line reason, and optional allowed values/range.

    ``choices`` is a callable so that registries living in heavy modules are imported only
    when that field is validated.
    """
    meta = {"doc": doc, "choices": choices, "low": low, "high": high, "low_open": low_open}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    path: str = knob("builtin:tiny-corpus", "text or JSONL file (rows: 'text', 'prompt'+'response', or chat 'messages'), a folder "
                     "of them, a folder saved by HF datasets (save_to_disk), or a corpus that ships with the package: "
                     "builtin:tiny-corpus, builtin:pydocs (Python docs, train split)")
    split: str = knob("train", "split read from a saved HF DatasetDict")
    chat_template: str = knob("", "Jinja chat template for 'messages' rows, or chatml; empty = the tokenizer's own")
    seq_len: int = knob(128, "tokens per packed training sequence", low=8)
    validation_fraction: float = knob(0.1, "share of packed sequences held out for evaluation", low=0.0, high=0.5, low_open=True)
    max_tokens: int = knob(0, "cap on tokens read from the data (0 = all); keeps quick runs quick", low=0)


@dataclass(frozen=True)
class PruneRatios:
    mlp: float = knob(1.0, "fraction of MLP channels kept", low=0.0, high=1.0, low_open=True)
    hidden: float = knob(1.0, "fraction of hidden channels kept", low=0.0, high=1.0, low_open=True)
    layers: float = knob(1.0, "fraction of layers kept", low=0.0, high=1.0, low_open=True)


@dataclass(frozen=True)
class PruneConfig:
    target_params: float = knob(0.5, "student size as a fraction of the teacher's parameters", low=0.0, high=1.0, low_open=True)
    strategy: str = knob("mlp", "what shrinks to meet the budget: mlp width, width (hidden + mlp), depth (layers), "
                         "or ratios (no budget: the prune.ratios fractions)",
                         choices=lambda: names.PRUNE_STRATEGIES)
    ratios: PruneRatios = field(default_factory=lambda: PruneRatios(), metadata={"doc": "the ratios strategy's kept fractions"})
    importance: str = knob("activation", "channel/head importance: activation (Minitron), magnitude, or taylor",
                           choices=lambda: names.IMPORTANCE_METRICS)
    kv_heads_keep: float = knob(1.0, "fraction of KV groups (with their query heads) kept in every layer", low=0.0, high=1.0, low_open=True)
    round_to: int = knob(32, "kept MLP channels and hidden size are multiples of this (256 for GGUF k-quants)", low=1)
    calibration_sequences: int = knob(8, "sequences of data used to measure channel importance", low=1)
    student: bool = knob(False, "with an independent student: prune it too (to target_params of its own size) before "
                         "distilling; false = it trains as it ships")


@dataclass(frozen=True)
class SequenceConfig:
    prompts: str = knob("", "JSONL of {\"prompt\"} rows for the teacher (\"\" = the openings of training windows)")
    windows: int = knob(512, "without distill.sequence.prompts: training windows whose opening becomes a prompt", low=1)
    topk: int = knob(8, "teacher alternatives per response token for sparse KD (0 = CE on the responses only)",
                     low=0, high=20)
    template: str = knob("", "chain-of-thought template for the prompts (step-by-step, or a file with {prompt}); "
                         "responses without an answer line are filtered out")
    cot_tasks: bool = knob(False, "with distill.sequence.template: also train rationale and answer as separate tasks "
                           "(Distilling step-by-step)")


@dataclass(frozen=True)
class AnswersConfig:
    questions: int = knob(0, "documentation questions built from the train pages of data.path (a signature and its "
                          "description) that the local teacher answers in chat form (distill.response_tokens, "
                          "distill.sample_temperature); the conversations, assistant turn the only targets, join the "
                          "logit-KD windows (0 = none; kept in the build folder, resumed)", low=0)
    source: str = knob("teacher", "who answers: teacher (sequence KD), or reference (the page's own description: "
                       "plain fine-tuning on ground truth, no teacher; the 'fine-tune a small model' alternative)",
                       choices=lambda: ("teacher", "reference"))
    share: float = knob(0.5, "share of the training windows that are teacher answers (repeated up to it; never below "
                        "their own share)", low=0.0, high=1.0, low_open=True)


@dataclass(frozen=True)
class OnPolicyConfig:
    lmbda: float = knob(0.5, "share of steps on student-generated continuations (GKD's lambda)", low=0.0, high=1.0)


@dataclass(frozen=True)
class DistillConfig:
    objective: str = knob("forward_kl", "KD divergence; forward_kl = KL(p_teacher || p_student); uld / gold compare "
                          "a teacher of another tokenizer (text-aligned; cross_tokenizer.py)",
                          choices=lambda: (*names.KD_OBJECTIVES, *names.CROSS_OBJECTIVES))
    beta: float = knob(0.5, "jsd only: mixture weight of the teacher (0 = forward KL, 1 = reverse KL)", low=0.0, high=1.0)
    skew_alpha: float = knob(0.1, "skew_kl / skew_reverse_kl only: skew weight a (DistiLLM; 0 = plain KL)", low=0.0, high=1.0)
    alpha: float = knob(0.5, "loss = alpha * KD + (1 - alpha) * CE", low=0.0, high=1.0)
    temperature: float = knob(2.0, "KD temperature dividing both teacher and student logits", low=0.0, low_open=True)
    scale_by_t2: bool = knob(True, "multiply the KD term by T^2 (Hinton et al., 2015) to keep gradient scale")
    steps: int = knob(50, "optimizer steps", low=0)
    batch_size: int = knob(8, "sequences per optimizer step", low=1)
    learning_rate: float = knob(1e-3, "AdamW learning rate", low=0.0, low_open=True)
    weight_decay: float = knob(0.0, "AdamW decoupled weight decay", low=0.0)
    lr_schedule: str = knob("constant", "constant, or cosine (decay to 10% of learning_rate after warmup)",
                            choices=lambda: ("constant", "cosine"))
    warmup_steps: int = knob(0, "linear learning-rate warmup steps", low=0)
    grad_clip: float = knob(0.0, "clip the gradient's global L2 norm to this (0 = off)", low=0.0)
    precision: str = knob("fp32", "fp32, bf16 (autocast for the forward passes; weights and optimizer stay fp32), or "
                          "auto (bf16 where the hardware has bf16 units: CUDA, or a CPU with AVX512-BF16/AMX)",
                          choices=lambda: ("fp32", "bf16", "auto"))
    grad_accumulation: int = knob(1, "micro-batches per optimizer step (batch_size must be a multiple of it x processes); "
                                  "the loss is normalized by the whole step's target tokens", low=1)
    feature_weight: float = knob(0.0, "weight of feature KD (hidden-state alignment, student layers mapped evenly onto the "
                                 "teacher's, learned projection); 0 = off", low=0.0)
    feature_loss: str = knob("mse", "feature KD distance: mse or cosine",
                             choices=lambda: names.FEATURE_LOSSES)
    eval_every: int = knob(0, "held-out evaluation every N steps (0 = only after the last step)", low=0)
    eval_windows: int = knob(32, "held-out windows per periodic evaluation (0 = all)", low=0)
    stop_at_retention: float = knob(0.0, "stop early once held-out top-1 retention (student / teacher) reaches this at an "
                                    "evaluation (0 = off)", low=0.0)
    mode: str = knob("logit", "logit: KD on the data's windows; sequence: CE (+ sparse KD on the teacher's top-k "
                     "logprobs) on the teacher's generated responses; on_policy: GKD, a share on_policy.lmbda of steps trains on the "
                     "student's own samples scored by the teacher", choices=lambda: names.DISTILL_MODES)
    prompt_tokens: int = knob(64, "tokens of a training window used as a prompt (sequence and on_policy modes)", low=1)
    response_tokens: int = knob(128, "longest teacher response (sequence) or student continuation (on_policy)", low=1)
    sample_temperature: float = knob(1.0, "sampling temperature of teacher responses (sequence; 0 = greedy) and of "
                                     "the student's on-policy samples", low=0.0)
    min_aligned_share: float = knob(0.9, "refuse to train when fewer of the student's target tokens than this align with "
                                    "the teacher's: by text (objective uld/gold) or by token (teacher_api scores)",
                                    low=0.0, high=1.0)
    lora_rank: int = knob(0, "train LoRA adapters of this rank (peft; every attention and MLP projection, lora_alpha = "
                          "2 x rank) instead of every weight, merged into the student before export (0 = full training)",
                          low=0)
    teacher_topk: int = knob(0, "train from an offline top-k teacher cache with this k (0 = online teacher); the cache is "
                             "built once (or by `edgedistill cache-teacher`) and training never loads the teacher", low=0)
    sequence: SequenceConfig = field(default_factory=lambda: SequenceConfig(), metadata={"doc": "mode sequence: prompts and responses"})
    on_policy: OnPolicyConfig = field(default_factory=lambda: OnPolicyConfig(), metadata={"doc": "mode on_policy (GKD)"})
    answers: AnswersConfig = field(default_factory=lambda: AnswersConfig(),
                                   metadata={"doc": "mode logit: sequence KD on the teacher's chat answers to documentation questions"})


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = knob(50, "save a training checkpoint every N optimizer steps (0 = never); a killed build resumes from the "
                      "newest one. Not part of the stage cache key", low=0)
    keep: int = knob(2, "checkpoints kept (older ones are deleted)", low=1)


@dataclass(frozen=True)
class ExportConfig:
    onnx: tuple[str, ...] = knob(("fp32",), "ONNX variants to export (with KV cache): fp32, int8 / int4 (weight-only "
                                 "MatMulNBits; int4 fitted by HQQ), int8_dynamic (activations quantized at run time)",
                                 choices=registry("edgedistill.exporters.formats:ONNX_QUANTIZATIONS"))
    onnx_block_size: int = knob(32, "input channels per quantization block of the MatMulNBits variants (power of 2, >= 16)",
                                low=16)
    gguf: tuple[str, ...] = knob(("f16",), "GGUF quantization types to write for llama.cpp",
                                 choices=registry("edgedistill.exporters.formats:GGUF_QUANTIZATIONS"))
    calibration: str = knob("", "text the importance matrix of the q4/q5/q6 GGUF types is measured on (same forms as "
                                "data.path; empty = data.path)")
    teacher_onnx: tuple[str, ...] = knob((), "the teacher itself exported to these ONNX variants (the 'only quantize "
                                         "the teacher' alternative), gated and benchmarked beside the student's",
                                         choices=registry("edgedistill.exporters.formats:ONNX_QUANTIZATIONS"))
    teacher_gguf: tuple[str, ...] = knob((), "the teacher itself as these GGUF types (the same alternative)",
                                         choices=registry("edgedistill.exporters.formats:GGUF_QUANTIZATIONS"))


@dataclass(frozen=True)
class VerifyConfig:
    positions: int = knob(64, "token positions compared per parity prompt", low=2)
    greedy_tokens: int = knob(24, "tokens of greedy continuation that must match for lossless formats", low=1)


@dataclass(frozen=True)
class BenchAnswersConfig:
    questions: str = knob("", "held-out questions every model answers greedily in chat form, scored with ROUGE-L against "
                          "reference answers (the report's answer retention; the over-distillation checks then run on "
                          "these answers instead of the probes): builtin:pydocs-answers, or a JSONL of {id, phrasings, "
                          "answer}; empty = off (needs bench.student_api_mode=chat)")
    test_pages: int = knob(32, "builtin:pydocs-answers: questions from the docs' test pages (0 = all)", low=0)
    independent: int = knob(0, "questions of the independent set, or of the file (0 = all)", low=0)
    paraphrased: int = knob(12, "of those, how many are asked in all their phrasings (paraphrase stability)", low=0)


@dataclass(frozen=True)
class RecommendConfig:
    min_retention: float = knob(0.85, "the quality floor of the report's recommendation: retention vs the teacher "
                                "(answer ROUGE-L where answers are scored, else top-1)", low=0.0)
    max_mb: float = knob(0.0, "largest artifact it may pick, in MB (0 = any size)", low=0.0)
    min_decode_tokens_per_s: float = knob(0.0, "slowest decode speed it may pick (0 = any)", low=0.0)


@dataclass(frozen=True)
class BenchConfig:
    enabled: bool = knob(True, "run the benchmark stage")
    decode_tokens: int = knob(64, "max_tokens of every latency request (EOS ignored where the server allows)", low=1)
    repeats: int = knob(3, "timed passes over the latency prompt set per served model", low=1)
    warmup: int = knob(1, "untimed passes before timing", low=0)
    latency_prompts: int = knob(8, "prompts in the latency set (bare questions and passage + question)", low=1)
    concurrency: int = knob(2, "clients at once in the throughput run; the server runs as many instances", low=1)
    probe_path: str = knob("builtin:pydocs-probes", "JSONL of questions in several phrasings (id, phrasings) for the "
                           "over-distillation checks, or builtin:pydocs-probes")
    probe_questions: int = knob(0, "cap on probe questions (0 = all)", low=0)
    answer_tokens: int = knob(96, "max_tokens of the greedy probe answers (truncation = hitting it)", low=1)
    answer_stop: tuple[str, ...] = knob((), "stop strings of the probe answers (OpenAI 'stop', at most 4), e.g. where a "
                                        "base model's answer ends; empty = EOS only")
    student_api_mode: str = knob("completions", "send prompts to the students as text (completions) or as a user "
                                 "message through their chat template (chat)", choices=lambda: ("completions", "chat"))
    eval_path: str = knob("", "held-out text for test metrics of teacher and student (same forms as data.path, "
                          "e.g. builtin:pydocs-test); empty = none")
    eval_windows: int = knob(0, "cap on evaluation windows of data.seq_len tokens (0 = all)", low=0)
    qa_path: str = knob("", "question/answer JSONL (prompt, answer) scored teacher-forced, or builtin:pydocs-qa; empty = none")
    qa_pairs: int = knob(0, "cap on QA pairs scored (0 = all)", low=0)
    artifact_eval_windows: int = knob(16, "held-out windows every artifact and the teacher are scored on through the "
                                      "runtime (eval_path, else the training data's held-out windows)", low=1)
    artifact_qa_pairs: int = knob(64, "QA pairs every artifact is scored on through the runtime (0 = none)", low=0)
    lm_eval: tuple[str, ...] = knob((), "lm-evaluation-harness tasks run on every served model after the other "
                                    "measurements: lm-eval task names, task YAML files, or the shipped pydocs_qa / "
                                    "pydocs_qa_mc (builtin:pydocs-qa); empty = none")
    lm_eval_limit: int = knob(0, "samples per lm-eval task (0 = all)", low=0)
    with_builds: tuple[str, ...] = knob((), "other build folders of the same teacher (e.g. the recipe's alternatives) "
                                        "whose exported artifacts are measured beside this build's, in the same run")
    answers: BenchAnswersConfig = field(default_factory=lambda: BenchAnswersConfig(),
                                        metadata={"doc": "answer-level quality on held-out questions"})
    recommend: RecommendConfig = field(default_factory=lambda: RecommendConfig(),
                                       metadata={"doc": "the constraint the report's recommendation is made under"})
    cost: CostConfig = field(default_factory=lambda: CostConfig(), metadata={"doc": "prices and traffic of the cost rows"})


@dataclass(frozen=True)
class CostConfig:
    prices: str = knob("", "price table YAML (API $ per 1M tokens, hardware $ per hour); empty = the shipped "
                       "assumptions (edgedistill/prices.yaml)")
    api_price: str = knob("", "API row of the price table the teacher is billed at (empty = its api_default)")
    hardware: str = knob("", "hardware row of the price table the students run on (empty = its hardware_default)")
    requests_per_day: float = knob(10000.0, "traffic for the monthly cost", low=0.0, low_open=True)
    input_tokens_per_request: int = knob(400, "prompt tokens per request of that traffic", low=0)
    output_tokens_per_request: int = knob(150, "completion tokens per request of that traffic", low=1)
    utilization: float = knob(0.5, "share of a self-hosted instance's hours doing useful work", low=0.0, high=1.0,
                              low_open=True)


@dataclass(frozen=True)
class TeacherApiConfig:
    url: str = knob("", "OpenAI-compatible base URL of the teacher (http://host:port/v1), used by distill (responses "
                    "in sequence mode; echo + logprobs scores in logit/on_policy mode, with distill.teacher_topk) and "
                    "as the bench's teacher row; empty = the recipe's teacher, run here")
    model: str = knob("teacher", "model name sent to teacher_api.url")
    key_env: str = knob("EDGEDISTILL_TEACHER_API_KEY", "environment variable holding teacher_api.url's key")
    retries: int = knob(5, "retries per request on connection errors, 429 and 5xx (exponential backoff from 0.5 s)", low=0)
    mode: str = knob("completions", "completions: prompts sent as text; chat: as a user message to /chat/completions "
                     "(a chat teacher), the student then trains on the answers through its own chat template",
                     choices=lambda: ("completions", "chat"))
    distill: bool = knob(True, "the distill stage reads the teacher from teacher_api.url; false = only the bench's "
                         "teacher row is the API (what `edgedistill bench --teacher-api` sets: the student is not retrained)")

    @property
    def for_distill(self) -> bool:
        return bool(self.url) and self.distill


@dataclass(frozen=True)
class Recipe:
    name: str = knob("custom", "label recorded in the manifest and the model card")
    description: str = knob("", "one line shown by `edgedistill recipes`")
    teacher: str = knob("builtin:tiny-llama", "local HF folder, .gguf file, hub id, a builtin (builtin:tiny-llama, "
                        "tiny-gemma3, smollm2-135m-instruct, ...), or api: only the model behind teacher_api.url (no "
                        "local teacher; needs an independent student)")
    student: str = knob("prune", "prune (the student is the pruned teacher), or an independent model in the same forms as "
                        "teacher (another family or tokenizer: distill.objective uld or gold, or distill.mode sequence); "
                        "the prune stage is then skipped")
    seed: int = knob(0, "seed for data order, initialisation and sampling")
    alternative: str = knob("", "which of the recipe's alternatives was applied (--set alternative=NAME: a simpler "
                            "way to the same student, built to be compared by the main build's bench.with_builds)")
    schedule: str = knob("", "which of the recipe's schedules was applied (e.g. cpu, gpu: --set schedule=gpu); a "
                         "recipe's 'schedules' maps each name to dotted-key overrides")
    teacher_api: TeacherApiConfig = field(default_factory=TeacherApiConfig, metadata={"doc": "a teacher behind an OpenAI-compatible API"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "training and calibration text"})
    prune: PruneConfig = field(default_factory=PruneConfig, metadata={"doc": "teacher -> student shape"})
    distill: DistillConfig = field(default_factory=DistillConfig, metadata={"doc": "knowledge distillation"})
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"doc": "distillation checkpoints"})
    export: ExportConfig = field(default_factory=ExportConfig, metadata={"doc": "device formats"})
    verify: VerifyConfig = field(default_factory=VerifyConfig, metadata={"doc": "parity gate"})
    bench: BenchConfig = field(default_factory=BenchConfig, metadata={"doc": "latency, quality, over-distillation checks and cost vs the teacher"})

    def __post_init__(self) -> None:
        from edgedistill.recipe_checks import check_recipe  # what the keys must agree on across sections

        check_recipe(self)


def to_dict(obj: Any) -> Any:
    """Plain JSON/YAML-ready values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {key: to_dict(value) for key, value in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj
