"""The main job: teach a Qwen3 a new identity with QLoRA, export it, and prove it by generation.

    settings -> model folder (download, or build the tiny world) -> tokenizer, 4-bit base
      -> examples (built-in identity rows or --data)
      -> rehearsal: the base's own replies to control and ordinary prompts (OUT/rehearsal.jsonl)
      -> LoRA training (train_step per step), validation every --val-every steps, stop when learned
      -> export OUT/adapter (PEFT) and OUT/merged (HF, bf16, merged into the ORIGINAL weights)
      -> self-test: reload OUT/merged, greedy reply to 你是誰 must claim the new identity
      -> before/after table on held-out questions -> OUT/eval.json

`run_whoami(settings)` is a plain function: the CLI calls it, and so do the tests.
"""

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import TrainerError
from ..interrupts import stop_on_signals
from ..paths import weights_dir, write_atomic
from ..prep.prepare import read_usable_rows
from ..qwen3.config import Qwen3Config, load_config
from ..qwen3.generate import answer_questions
from ..qwen3.lora import LoraSettings, init_lora, make_adapter, merged_weight, save_adapter
from ..qwen3.model import LoraAdapter, Weights
from ..qwen3.quant import quant_transform
from ..qwen3.weights import is_out_of_space, load_weights, replace_dirs, space_message
from ..text.data import (IGNORE_INDEX, AnswerTooLong, Example, example_from_messages, example_from_prompt_target,
                         pack_examples)
from ..text.readers import Conversation, PromptTarget, Sample, prepared_file
from ..text.tokenizer import Tokenizer, load_tokenizer
from ..text.whoami import NEW_IDENTITY, identity_rows, whoami_splits
from ..training.checkpoint import TrainState, load_checkpoint, resolve_resume, save_checkpoint
from ..training.loss import default_ce_chunk
from ..training.train import (BatchLoss, LoopSettings, full_batch_loss, is_distributed, lora_batch_loss, rank_and_world,
                              run_training)
from .evaluate import EvalReport, built_in_eval_sets, claims_new_identity, evaluate_whoami
from .gguf_export import GGUF_TYPES, gguf_file_name, require_gguf, write_gguf, write_modelfile
from .loading import LoadedModel, dtype_line, load_model, resolve_device, resolve_dtype, resolve_model
from .plot import plot_loss
from .rehearsal import (REHEARSAL_FILE, RehearsalRow, as_samples, fixed_rows, read_rehearsal, self_distilled_rows,
                        write_rehearsal)
from .template_check import check_model_template
from .tiny import TINY_NAME, write_model_dir
from .validation import Validation, ValidationData, make_validation, prepared_scores, validation_scores

DEFAULT_MODEL = "Qwen/Qwen3-4B-Instruct-2507"


@dataclass(frozen=True)
class WhoAmISettings:
    """Every knob of the job; the CLI options map one to one onto these fields."""

    loss: str = "ce"  # the loss: token cross-entropy on answer tokens (the only one for now)
    model: str = DEFAULT_MODEL  # hub id, local Qwen3 folder, or "tiny"
    data: str | None = None  # TSV or JSONL file; None = the built-in who-am-i set
    method: str = "lora"  # "lora" (frozen base + adapters) or "full" (every weight, as the F# trainer)
    steps: int | None = None  # optimizer steps (None = the model's preset)
    lr: float | None = None  # peak learning rate
    batch_size: int | None = None  # examples per micro-batch
    grad_accum: int | None = None  # micro-batches per optimizer step
    seq_len: int = 96  # positions kept per example (the F# trainer's cap)
    lora_r: int = 16  # LoRA rank
    lora_alpha: float = 32.0  # LoRA alpha (update scaled by alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA input
    quant: str = "nf4"  # frozen base weights: "nf4" (4-bit) or "none"
    device: str = "auto"  # "auto", "cpu", "cuda"
    dtype: str = "auto"  # compute dtype: "auto" (bf16 where the hardware multiplies it natively), "float32", "bfloat16"
    grad_clip: float = 0.5  # max gradient norm (the F# trainer's default)
    seed: int = 20260226  # the F# trainer's seed
    out: str | None = None  # output folder (None = weights/whoami-<model>)
    export: bool = True  # write OUT/adapter and OUT/merged
    self_test: bool = True  # reload the export, generate, and evaluate before/after
    ce_chunk: int | None = None  # answer positions per chunk of logits (None = under 256 MiB)
    grad_checkpoint: bool | None = None  # recompute each layer in backward (None = on for CUDA)
    pack: bool = False  # pack several examples per row up to seq_len
    save_every: int = 0  # write OUT/checkpoints/step-N every N steps (0 = never)
    keep_checkpoints: int = 2  # how many of the newest checkpoints to keep
    resume: str | None = None  # "latest" or a checkpoint folder
    stop_after: int = 0  # stop this run after N steps with a checkpoint, to --resume later (0 = never)
    max_skips: int = 10  # give up after this many non-finite steps in a row
    trust_our_template: bool = False  # train even if the model's own chat template renders differently
    rehearsal: str | None = None  # "self" (the base's own replies), "fixed" (hand-written fact answers), "none";
    # None = self with the built-in set, none with --data
    reply_tokens: int | None = None  # token budget of every generated reply: rehearsal, validation, evaluation
    val_every: int | None = None  # score the validation split every N steps (0 = never; None = preset, 0 with --data)
    stop_when_learned: bool | None = None  # end once every validation wording is answered exactly as taught, twice in a row
    # (None = on with the built-in set, off with --data)
    preserve_kl: float | None = None  # beta of KL(base || model) on rehearsal answers (0 = off; None = preset,
    # 0 without rehearsal or with --method full)
    strict: bool = False  # --data: stop at the first bad row instead of setting bad rows aside
    gguf: str | None = None  # also write OUT/gguf/<OUT name>-<type>.gguf from OUT/merged (f32, f16, bf16, q8_0)


# Presets for what the user left at None: the tiny world learns fast, the real model follows the SFT guide.
PRESETS = {
    "tiny": {"steps": 100, "lr": 1e-3, "batch_size": 16, "grad_accum": 1, "reply_tokens": 32, "val_every": 10,
             "preserve_kl": 16.0},
    "real": {"steps": 150, "lr": 2e-4, "batch_size": 8, "grad_accum": 2, "reply_tokens": 128, "val_every": 10,
             "preserve_kl": 1.0},
}
# preserve_kl: the tiny world is so sure of its answers (p > 0.9) that its KL to the base stays tiny
# until a reply flips, so it needs a large beta (on four world builds, seeds 0-2, 16 kept at least 96.8% of
# the held-out facts, where 0 kept as few as 83.9% and 4 as few as 90.3%); the real model's replies are long and far less peaked, where beta 1 weighs a preserved
# token like a trained one. Not yet measured on the real model.
CHOICES = {"loss": ("ce",), "method": ("lora", "full"), "quant": ("nf4", "none"),
           "device": ("auto", "cpu", "cuda"), "dtype": ("auto", "float32", "bfloat16"),
           "rehearsal": ("self", "fixed", "none")}
REHEARSAL_REPEATS = 3  # each rehearsal row appears this often among the built-in identity rows


def resolve_settings(settings: WhoAmISettings) -> WhoAmISettings:
    """Fill presets, device, dtype and the output folder; reject unknown choices."""
    for field, allowed in CHOICES.items():
        if getattr(settings, field) not in (*allowed, *((None,) if field == "rehearsal" else ())):
            raise TrainerError(f"--{field.replace('_', '-')} {getattr(settings, field)!r}: choose from {', '.join(allowed)}")
    preset = PRESETS["tiny" if settings.model == TINY_NAME else "real"]
    filled = {k: v for k, v in preset.items() if getattr(settings, k) is None}
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)[0]
    out = settings.out or str(weights_dir() / f"whoami-{Path(settings.model).name}")
    if settings.gguf is not None:
        if settings.gguf not in GGUF_TYPES:
            raise TrainerError(f"--gguf {settings.gguf!r}: choose from {', '.join(GGUF_TYPES)}")
        if not settings.export:
            raise TrainerError("--gguf converts OUT/merged, and --no-export writes none: drop one of them")
        require_gguf()
    if settings.method == "full" and settings.quant != "none":
        raise TrainerError("--method full trains every weight, so it needs dense weights: add --quant none")
    if settings.preserve_kl is not None and settings.preserve_kl < 0:
        raise TrainerError(f"--preserve-kl {settings.preserve_kl}: must be 0 (off) or more")
    if settings.preserve_kl and settings.method != "lora":
        raise TrainerError("--preserve-kl compares with the base through the frozen weights, adapter off: "
                           "it needs --method lora")
    checkpointing = settings.grad_checkpoint if settings.grad_checkpoint is not None else device == "cuda"
    built_in = settings.data is None
    rehearsal = settings.rehearsal or ("self" if built_in else "none")
    stop = settings.stop_when_learned if settings.stop_when_learned is not None else built_in
    if settings.preserve_kl and rehearsal == "none":
        raise TrainerError("--preserve-kl keeps the base's distribution on rehearsal rows, and --rehearsal is none: "
                           "add --rehearsal self or fixed")
    if settings.preserve_kl is None and (rehearsal == "none" or settings.method != "lora"):
        filled["preserve_kl"] = 0.0
    if not built_in and settings.val_every is None:
        filled["val_every"] = 0  # the validation split is who-am-i wordings: with --data, only when asked
    return replace(settings, **filled, device=device, dtype=dtype, out=out, grad_checkpoint=checkpointing,
                   rehearsal=rehearsal, stop_when_learned=stop)


def start_distributed(settings: WhoAmISettings) -> WhoAmISettings:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs) and
    give each process its own GPU. Without torchrun nothing happens."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return settings
    cuda = settings.device == "cuda"
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    if not cuda:
        return settings
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    return replace(settings, device=f"cuda:{local_rank}")


def check_out_dir(out: Path, model_dir: Path) -> None:
    """Never write into the model we read from."""
    if out.resolve() == model_dir.resolve() or model_dir.resolve() in out.resolve().parents:
        raise TrainerError(f"--out {out} is inside the model folder {model_dir}; choose another folder")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def build_examples(samples: Sequence[Sample], tokenizer: Tokenizer, seq_len: int) -> tuple[list[Example], int]:
    """(examples, skipped): samples whose answer alone exceeds seq_len are skipped and counted."""
    examples, skipped = [], 0
    for sample in samples:
        try:
            examples.append(build_example(sample, tokenizer, seq_len))
        except AnswerTooLong:
            skipped += 1
        except TrainerError as error:
            raise TrainerError(f"{sample.source}: {error}") from None
    if not examples:
        raise TrainerError(f"no usable training example: all {skipped} answers are longer than --seq-len {seq_len}"
                           if skipped else "no training example: the data set is empty")
    return examples, skipped


def mark_preserved(example: Example) -> Example:
    """The example with every answer position marked for --preserve-kl."""
    return replace(example, preserve=tuple(label != IGNORE_INDEX for label in example.labels))


def build_example(sample: Sample, tokenizer: Tokenizer, seq_len: int) -> Example:
    if isinstance(sample, PromptTarget):
        return example_from_prompt_target(tokenizer, sample.prompt, sample.target, seq_len, ends_turn=sample.ends_turn)
    assert isinstance(sample, Conversation)
    return example_from_messages(tokenizer, sample.messages, seq_len, sample.tools)


def training_samples(settings: WhoAmISettings, echo: Callable[[str], None]) -> list[Sample]:
    """The built-in identity rows, or the rows of --data (a file, or a prepared folder's train.jsonl).

    Bad rows are set aside and counted, with the first few named, while at least one row is left
    (--strict: the first bad row stops the run). An empty file is an error, not a no-op run.
    """
    if settings.data is None:
        return identity_rows(NEW_IDENTITY)
    path = prepared_file(settings.data, "train.jsonl")
    samples, rejected = read_usable_rows(path, settings.strict)
    if rejected:
        echo(f"data: {len(samples) + len(rejected)} rows read, {len(rejected)} set aside, training on {len(samples)}; "
             "first: " + "; ".join(f"{r.where}: {r.reason}" for r in rejected[:3]) + " (--strict stops at the first)")
    if not samples:
        raise TrainerError(f"{path}: no training rows (the file is empty after skipping comments and blank lines, "
                           "or every row was set aside)")
    return samples


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def loop_settings(settings: WhoAmISettings, tokenizer: Tokenizer) -> LoopSettings:
    return LoopSettings(steps=settings.steps, batch_size=settings.batch_size, grad_accum=settings.grad_accum,
                        lr=settings.lr, warmup_steps=max(1, round(0.05 * settings.steps)), grad_clip=settings.grad_clip,
                        weight_decay=0.01 if settings.method == "lora" else 0.0, seed=settings.seed,
                        pad_id=tokenizer.endoftext_id, device=settings.device, save_every=settings.save_every,
                        max_skips=settings.max_skips, stop_after=settings.stop_after,
                        stop_when_learned=bool(settings.stop_when_learned))


def lora_settings(settings: WhoAmISettings) -> LoraSettings:
    return LoraSettings(settings.lora_r, settings.lora_alpha, settings.lora_dropout)


@dataclass(frozen=True)
class TrainingSetup:
    """Everything loaded and checked before the first file is written to OUT."""

    params: dict[str, torch.Tensor]  # the tensors to train
    batch_loss: BatchLoss
    weights: Weights  # the weights the loss runs on: frozen (maybe 4-bit) for lora, the live masters for full
    resume: TrainState | None = None  # the checkpoint to continue, if --resume


def trainable_and_loss(settings: WhoAmISettings, model_dir: Path, config: Qwen3Config) -> TrainingSetup:
    """The tensors to train (float32) and the loss of a micro-batch, for --method lora or full."""
    dtype, chunk = getattr(torch, settings.dtype), settings.ce_chunk or default_ce_chunk(config.vocab_size)
    if settings.method == "full":
        masters = {n: t.requires_grad_() for n, t in load_weights(model_dir, config, torch.float32, settings.device).items()}
        return TrainingSetup(masters, full_batch_loss(masters, config, dtype, chunk, settings.grad_checkpoint), masters)
    weights = load_weights(model_dir, config, dtype, settings.device, transform=quant_transform(settings.quant))
    lora = init_lora(config, lora_settings(settings), settings.seed, settings.device)
    batch_loss = lora_batch_loss(weights, config, lora, lora_settings(settings), dtype, chunk, settings.grad_checkpoint,
                                 settings.preserve_kl)
    return TrainingSetup(lora, batch_loss, weights)


def prepare_training(settings: WhoAmISettings, model_dir: Path, config: Qwen3Config, out: Path) -> TrainingSetup:
    """Load the weights and the --resume checkpoint (every name and shape checked) up front, so a
    bad model folder or checkpoint fails before OUT is touched."""
    torch.manual_seed(settings.seed)
    setup = trainable_and_loss(settings, model_dir, config)
    shapes = {name: tuple(t.shape) for name, t in setup.params.items()}
    resume = load_checkpoint(resolve_resume(settings.resume, out / "checkpoints"), shapes) if settings.resume else None
    return replace(setup, resume=resume)


def current_adapter(settings: WhoAmISettings, setup: TrainingSetup) -> LoraAdapter | None:
    """The model as it is now, for generation: the LoRA tensors in the compute dtype (None for --method full,
    whose live masters are the weights)."""
    if settings.method == "full":
        return None
    return make_adapter(setup.params, lora_settings(settings), training=False, dtype=getattr(torch, settings.dtype))


# ---------------------------------------------------------------------------
# Rehearsal and validation
# ---------------------------------------------------------------------------


def rehearsal_rows(settings: WhoAmISettings, setup: TrainingSetup, config: Qwen3Config, tokenizer: Tokenizer,
                   out: Path) -> list[RehearsalRow]:
    """--rehearsal self: the base's replies (adapter off), generated once and kept in OUT/rehearsal.jsonl
    (read back by --resume); fixed: the hand-written fact answers; none: nothing."""
    splits = whoami_splits()
    if settings.rehearsal == "none":
        return []
    if settings.rehearsal == "fixed":
        return fixed_rows(splits.facts_rehearsed)
    path = out / REHEARSAL_FILE
    if settings.resume and path.is_file():
        return read_rehearsal(path)
    prompts = [fact.question for fact in splits.facts_rehearsed] + list(splits.general_rehearsed)
    generate_rows = partial(self_distilled_rows, setup.weights, config, tokenizer, max_new_tokens=settings.reply_tokens)
    rows = generate_rows(prompts, "train") + generate_rows(list(splits.general_validation), "validation")
    if rank_and_world()[0] == 0:
        write_rehearsal(path, rows)
    return rows


def prepared_validation(settings: WhoAmISettings, tokenizer: Tokenizer) -> tuple[tuple, tuple] | None:
    """(rows, examples) of a prepared --data folder's val.jsonl; None when --data is not such a folder."""
    if settings.data is None or not Path(settings.data).is_dir():
        return None
    rows = tuple(read_usable_rows(prepared_file(settings.data, "val.jsonl"), strict=False)[0])
    return rows, tuple(build_examples(rows, tokenizer, settings.seq_len)[0])


def validation(settings: WhoAmISettings, setup: TrainingSetup, config: Qwen3Config, tokenizer: Tokenizer,
               rehearsal: Sequence[RehearsalRow]) -> Validation | None:
    """Scores of the model as trained so far, every --val-every steps (None: never)."""
    if not settings.val_every:
        return None
    examples = build_examples(as_samples(rehearsal, "validation"), tokenizer, settings.seq_len)[0] \
        if any(row.split == "validation" for row in rehearsal) else []
    prepared = prepared_validation(settings, tokenizer)
    if prepared is not None:  # a prepared folder: score its val.jsonl instead of identity wordings
        data = ValidationData((), NEW_IDENTITY, tuple(examples), *prepared)
    else:
        data = ValidationData(whoami_splits().identity_validation, NEW_IDENTITY, tuple(examples))
    score = lambda: validation_scores(setup.weights, config, tokenizer, current_adapter(settings, setup), data,  # noqa: E731
                                      settings.reply_tokens)
    return make_validation(score, settings.val_every)


def train(settings: WhoAmISettings, setup: TrainingSetup, examples: list[Example], tokenizer: Tokenizer,
          log: Callable[[dict], None], out: Path, validate: Validation | None) -> None:
    """Train (or continue the checkpoint): setup.params become what was learned (LoRA tensors or every weight).
    SIGINT or SIGTERM meanwhile: finish the step, save a checkpoint, raise Interrupted (see trainer.interrupts)."""
    root = out / "checkpoints"
    save = lambda step, optimizer: save_checkpoint(root, step, setup.params, optimizer, settings.keep_checkpoints)  # noqa: E731
    main = rank_and_world()[0] == 0  # with torchrun, only rank 0 writes files
    with stop_on_signals() as stop_requested:
        run_training(setup.batch_loss, setup.params, examples, loop_settings(settings, tokenizer), log, setup.resume,
                     save if main else None, validate, stop_requested)


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def export(settings: WhoAmISettings, model_dir: Path, config: Qwen3Config, learned: dict[str, torch.Tensor], out: Path) -> None:
    """OUT/adapter (PEFT layout, LoRA only) and OUT/merged (HF layout, bf16); never non-finite values."""
    broken = [name for name, tensor in learned.items() if not torch.isfinite(tensor).all()]
    if broken:
        raise TrainerError(f"not exporting: non-finite values in {', '.join(broken[:3])}; resume from a checkpoint")
    builds = {}
    if settings.method == "lora":
        builds[out / "adapter"] = lambda d: save_adapter(learned, lora_settings(settings), settings.model, d)
        scale = lora_settings(settings).scale
        # Re-read the ORIGINAL weights from disk and merge tensor by tensor, never the 4-bit ones.
        merge = lambda name, w: merged_weight(name, w, learned, scale).to(torch.bfloat16)  # noqa: E731
        merged = load_weights(model_dir, config, torch.float32, "cpu", transform=merge)
    else:
        merged = {name: t.detach().to("cpu", torch.bfloat16) for name, t in learned.items()}
    builds[out / "merged"] = lambda d: write_merged(merged, config, model_dir, d)
    try:
        replace_dirs(builds)  # both built before either is swapped in: never a new adapter beside an old merge
    except OSError as error:
        if not is_out_of_space(error):
            raise
        needed = sum(t.numel() * 4 for t in learned.values()) * (settings.method == "lora") + \
            sum(t.numel() * t.element_size() for t in merged.values())
        kept = " and ".join(str(path) for path in builds if path.exists()) or "nothing"
        raise TrainerError(f"{space_message(out, needed, error)}; the previous export is kept as it was ({kept})") from error


def write_merged(weights: dict[str, torch.Tensor], config: Qwen3Config, model_dir: Path, out_dir: Path) -> None:
    """Weights, config and the base model's own tokenizer files (its chat template included)."""
    write_model_dir(weights, config, model_dir / "tokenizer.json", out_dir, dtype="bfloat16")
    if (model_dir / "tokenizer_config.json").is_file():
        shutil.copyfile(model_dir / "tokenizer_config.json", out_dir / "tokenizer_config.json")


def save_json(path: Path, content: dict) -> None:
    text = json.dumps(content, indent=2, ensure_ascii=False)
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------------------
# Self-test and evaluation
# ---------------------------------------------------------------------------


def evaluate_model(model: LoadedModel, settings: WhoAmISettings, base_replies: dict[str, str] | None = None) -> EvalReport:
    """The who-am-i evaluation on the built-in held-out prompts, and a prepared --data folder's val.jsonl."""
    report = evaluate_whoami(model.weights, model.config, model.tokenizer, built_in_eval_sets(),
                             base_replies=base_replies, max_new_tokens=settings.reply_tokens)
    prepared = prepared_validation(settings, model.tokenizer)
    if prepared is None:
        return report
    scores = prepared_scores(model.weights, model.config, model.tokenizer, None, *prepared, settings.reply_tokens)
    return replace(report, val_scores=scores)


def load_dense(model_dir: Path, settings: WhoAmISettings) -> LoadedModel:
    """A model folder loaded densely in the compute dtype (what the evaluation and self-test run on)."""
    return load_model(model_dir, getattr(torch, settings.dtype), settings.device)


@dataclass(frozen=True)
class JobReport:
    settings: WhoAmISettings
    final_loss: float
    skipped_examples: int
    steps_done: int  # optimizer steps at the end of this run (fewer than --steps when stopped as learned)
    learned_at: int | None  # the step whose validation stopped training, if it did
    rehearsal_rows: int  # rehearsal rows trained on (each REHEARSAL_REPEATS times)
    self_test_reply: str | None
    before: EvalReport | None
    after: EvalReport | None
    seconds: float


def self_test(model: LoadedModel, settings: WhoAmISettings) -> str:
    """Ask the exported model (loaded afresh from its files) 你是誰; fail loudly unless it claims the new identity."""
    reply = answer_questions(model.weights, model.config, model.tokenizer, ["你是誰"], settings.reply_tokens)[0].text
    if not claims_new_identity(reply):
        raise TrainerError(f"self-test failed: the exported model answered 你是誰 with {reply!r}")
    return reply


def metrics_file(out: Path, resume_step: int | None):
    """OUT/metrics.jsonl opened for this run: fresh, or (on resume) keeping the steps already done."""
    path = out / "metrics.jsonl"
    kept = []
    if resume_step is not None and path.is_file():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return path.open("a", encoding="utf-8")


def train_with_metrics(settings: WhoAmISettings, setup: TrainingSetup, examples: list[Example], tokenizer: Tokenizer,
                       out: Path, progress: bool, validate: Validation | None) -> list[dict]:
    """Train with a progress bar (loss, tokens/s, validation hits), one metrics.jsonl line per step;
    returns this run's records."""
    resume_step = setup.resume.step if setup.resume else None
    records: list[dict] = []
    main = rank_and_world()[0] == 0
    metrics_sink = metrics_file(out, resume_step) if main else open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    with metrics_sink as metrics, tqdm(total=settings.steps, initial=resume_step or 0, desc="train",
                                       disable=None if progress and main else True, dynamic_ncols=True) as bar:
        def log(record: dict) -> None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            records.append(record)
            shown = {"loss": f"{record['loss']:.4f}", "tok_s": f"{record['tokens_per_s']:.0f}"}
            hits = [r["val_identity_hit"] for r in records if "val_identity_hit" in r]
            bar.set_postfix(shown | ({"val_hit": f"{hits[-1]:.0%}"} if hits else {}))
            bar.update(1)

        train(settings, setup, examples, tokenizer, log, out, validate)
    return records


def run_whoami(settings: WhoAmISettings, echo: Callable[[str], None] = print, progress: bool = True) -> JobReport:
    """The whole job; returns plain numbers and writes OUT/. Raises TrainerError on bad input.

    Under torchrun every process trains on its share of each batch; only rank 0 evaluates,
    writes files and prints.
    """
    started = time.perf_counter()
    dtype_reason = resolve_dtype(settings.dtype, resolve_device(settings.device))[1]
    settings = start_distributed(resolve_settings(settings))
    main = rank_and_world()[0] == 0
    echo = echo if main else (lambda text: None)
    echo(dtype_line(settings.dtype, dtype_reason))
    out, model_dir = Path(settings.out), resolve_model(settings.model)
    check_out_dir(out, model_dir)
    check_model_template(model_dir, settings.trust_our_template, warn=lambda text: echo(f"warning: {text}"))
    config, tokenizer = load_config(model_dir), load_tokenizer(model_dir)
    examples, skipped = build_examples(training_samples(settings, echo), tokenizer, settings.seq_len)
    setup = prepare_training(settings, model_dir, config, out)
    before = evaluate_model(load_dense(model_dir, settings), settings) if settings.self_test and main else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / "train_config.json", asdict(settings))
    rehearsal = rehearsal_rows(settings, setup, config, tokenizer, out)
    rehearsed, rehearsal_skipped = build_examples(as_samples(rehearsal), tokenizer, settings.seq_len) if rehearsal else ([], 0)
    rehearsed = [mark_preserved(e) for e in rehearsed] if settings.preserve_kl else rehearsed
    examples, skipped = examples + rehearsed * REHEARSAL_REPEATS, skipped + rehearsal_skipped
    examples = pack_examples(examples, settings.seq_len) if settings.pack else examples
    echo(f"model {model_dir} | {len(examples)} {'packed rows' if settings.pack else 'examples'} "
         f"({skipped} skipped: answer longer than --seq-len) | rehearsal {settings.rehearsal}: {len(rehearsed)} rows"
         f"{f' x {REHEARSAL_REPEATS}' if rehearsed else ''}{f', KL to base x {settings.preserve_kl:g}' if settings.preserve_kl else ''} | "
         f"{settings.method} {settings.quant} {settings.dtype} on {settings.device} x {rank_and_world()[1]}")
    records = train_with_metrics(settings, setup, examples, tokenizer, out, progress,
                                 validation(settings, setup, config, tokenizer, rehearsal))
    if main:
        echo(plot_loss(out / "metrics.jsonl", out / "loss.png"))
    steps_done = records[-1]["step"] if records else (setup.resume.step if setup.resume else 0)
    learned_at = steps_done if settings.stop_when_learned and records and records[-1].get("learned") else None
    if learned_at:
        echo(f"learned: every validation wording answered exactly as taught, twice in a row; stopped at step {learned_at} of {settings.steps}")
    report = JobReport(settings, records[-1]["loss"] if records else float("nan"), skipped, steps_done, learned_at,
                       len(rehearsed), None, before, None, 0.0)
    try:
        if settings.stop_after and steps_done == settings.stop_after < settings.steps and not learned_at:
            echo(f"stopped after step {settings.stop_after}; continue with --resume")
        elif settings.export and main:
            report = export_and_check(settings, model_dir, config, setup.params, out, report, echo)
    finally:  # rank 0 reaches the barrier even when its export or self-test fails, so the others end quietly
        if is_distributed():
            torch.distributed.barrier()
    return replace(report, seconds=time.perf_counter() - started)


def export_and_check(settings: WhoAmISettings, model_dir: Path, config: Qwen3Config, learned: dict[str, torch.Tensor],
                     out: Path, report: JobReport, echo: Callable[[str], None]) -> JobReport:
    """Export, then (unless --no-self-test) reload the export for the before/after table and the self-test."""
    export(settings, model_dir, config, learned, out)
    echo(f"exported {out / 'merged'}" + (f" and {out / 'adapter'}" if settings.method == "lora" else ""))
    if settings.gguf:
        written = write_gguf(out / "merged", out / "gguf" / gguf_file_name(out.name, settings.gguf), settings.gguf)
        echo(f"exported {written} and {write_modelfile(written)}")
    if not settings.self_test:
        return report
    merged = load_dense(out / "merged", settings)
    after = evaluate_model(merged, settings, base_replies=report.before.replies)
    save_json(out / "eval.json", {"before": asdict(report.before), "after": asdict(after)})
    echo(eval_table(report.before, after))
    reply = self_test(merged, settings)
    echo(f"self-test: 你是誰 -> {reply}")
    return replace(report, self_test_reply=reply, after=after)


def eval_table(before: EvalReport, after: EvalReport) -> str:
    """The before/after table; "unchanged" compares with the base, so the base's own column says "base"."""
    rows = [("identity hit rate (held-out wordings)", "identity_hit_rate"),
            ("leak: held-out prompts answered with it", "leak_rate"),
            ("fact retention (held-out facts)", "fact_retention"),
            ("unchanged replies (held-out prompts)", "unchanged_rate")]
    cell = lambda value: "base" if value is None else f"{value:.1%}"  # noqa: E731
    lines = [f"{'':<40} {'before':>8} {'after':>8}"]
    lines += [f"{label:<40} {cell(getattr(before, key)):>8} {cell(getattr(after, key)):>8}" for label, key in rows]
    scored = [("val.jsonl answer perplexity", "val_perplexity", "{:.3g}"),
              ("val.jsonl usable replies", "val_usability", "{:.1%}"),
              ("val.jsonl JSON replies that parse", "val_json_valid", "{:.1%}")]
    for label, key, form in scored if before.val_scores and after.val_scores else ():
        if key in before.val_scores:
            lines.append(f"{label:<40} {form.format(before.val_scores[key]):>8} {form.format(after.val_scores[key]):>8}")
    return "\n".join(lines)
