"""The main job: teach a Qwen3 a new identity with QLoRA, export it, and prove it by generation.

    settings -> model folder (download, or build the tiny world) -> tokenizer, 4-bit base
      -> examples (built-in identity rows or --data)                        job/examples.py
      -> rehearsal: the base's own replies to control and ordinary prompts  job/rehearsal.py
      -> LoRA training (train_step per step), validation, stop when learned job/training_run.py
      -> export OUT/adapter (PEFT) and OUT/merged (HF, bf16, merged into the ORIGINAL weights)  job/export.py
      -> self-test: reload OUT/merged, greedy reply to 你是誰 must claim the new identity
      -> before/after table on held-out questions -> OUT/eval.json

This module only orchestrates: it resolves the settings once (job/settings.py) into the narrow
values each stage takes, and runs the stages in order. `run_whoami(settings)` is a plain
function: the CLI calls it, and so do the tests.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..errors import TrainerError
from ..paths import write_json
from ..qwen3.config import load_config
from ..qwen3.generate import answer_questions
from ..text.data import Example, pack_examples
from ..text.tokenizer import Tokenizer, load_tokenizer
from ..training.checkpoint import TrainState
from ..training.loss import LOSSES
from ..training.train import is_distributed, rank_and_world
from .evaluate import EvalReport, built_in_eval_sets, claims_new_identity, evaluate_whoami
from .examples import PreparedValidation, build_examples, mark_kl_positions, prepared_validation, training_samples
from .export import export
from .gguf_export import gguf_file_name, write_gguf, write_modelfile
from .loading import LoadedModel, dtype_line, load_model, resolve_device, resolve_dtype, resolve_model
from .plot import plot_loss
from .rehearsal import REHEARSAL_FILE, RehearsalRow, as_samples, rehearsal_rows
from .settings import WhoAmISettings, lora_settings, loop_settings, resolve_settings
from .template_check import check_model_template
from .training_run import LossChoices, prepare_training, resume_folder, train_with_metrics, validation
from .validation import prepared_scores

REHEARSAL_REPEATS = 3  # each rehearsal row appears this often among the built-in identity rows


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


def run_whoami(settings: WhoAmISettings, echo: Callable[[str], None] = print, progress: bool = True) -> JobReport:
    """The whole job; returns plain numbers and writes OUT/. Raises TrainerError on bad input.

    Under torchrun every process trains on its share of each batch; only rank 0 evaluates,
    writes files and prints.
    """
    started = time.perf_counter()
    dtype_reason = resolve_dtype(settings.dtype, resolve_device(settings.device))[1]
    settings = start_distributed(resolve_settings(settings))
    # the narrow values the stages take, resolved once
    main = rank_and_world()[0] == 0  # with torchrun, only rank 0 evaluates, writes files and prints
    echo = echo if main else (lambda text: None)
    dtype, lora = getattr(torch, settings.dtype), lora_settings(settings)
    out, model_dir = Path(settings.out), resolve_model(settings.model)
    echo(dtype_line(settings.dtype, dtype_reason))
    check_out_dir(out, model_dir)
    check_model_template(model_dir, settings.trust_our_template, warn=lambda text: echo(f"warning: {text}"))
    config, tokenizer = load_config(model_dir), load_tokenizer(model_dir)
    examples, skipped = build_examples(training_samples(settings.data, settings.strict, echo), tokenizer,
                                       settings.seq_len)
    scored = settings.val_every or (settings.self_test and main)  # a prepared folder's val.jsonl is read
    prepared = prepared_validation(settings.data, tokenizer, settings.seq_len) if scored else None
    loss = LossChoices(LOSSES[settings.loss], settings.ce_chunk, settings.grad_checkpoint, settings.preserve_kl)
    setup = prepare_training(model_dir, config, lora, dtype, settings.device, settings.quant, settings.seed, loss,
                             resume_folder(settings.resume, out))
    before = evaluate_model(load_model(model_dir, dtype, settings.device), settings.reply_tokens, prepared) \
        if settings.self_test and main else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", asdict(settings))
    rehearsal = rehearsal_rows(settings.rehearsal, setup.weights, config, tokenizer, settings.reply_tokens,
                               out / REHEARSAL_FILE, reuse=settings.resume is not None, write=main)
    rows, rehearsed, skipped = with_rehearsal(examples, skipped, rehearsal, tokenizer, settings.seq_len,
                                              kl=settings.preserve_kl > 0, pack=settings.pack)
    echo(plan_line(settings, model_dir, len(rows), skipped, rehearsed))
    validate = validation(settings.val_every, setup, config, tokenizer, rehearsal, prepared, settings.seq_len,
                          settings.reply_tokens)
    records = train_with_metrics(setup, rows, loop_settings(settings, tokenizer.endoftext_id), out,
                                 settings.keep_checkpoints, main, progress, validate)
    report = training_report(settings, records, setup.resume, skipped, rehearsed, before, out if main else None, echo)
    try:
        if report.learned_at is None and stopped_early(settings, report.steps_done):
            echo(f"stopped after step {settings.stop_after}; continue with --resume")
        elif settings.export and main:
            export(setup.params, lora, settings.model, model_dir, config, out)
            echo(f"exported {out / 'merged'}" + (f" and {out / 'adapter'}" if lora else ""))
            report = check_export(out, settings, prepared, report, echo)
    finally:  # rank 0 reaches the barrier even when its export or self-test fails, so the others end quietly
        if is_distributed():
            torch.distributed.barrier()
    return replace(report, seconds=time.perf_counter() - started)


def with_rehearsal(examples: list[Example], skipped: int, rehearsal: Sequence[RehearsalRow], tokenizer: Tokenizer,
                   seq_len: int, kl: bool, pack: bool) -> tuple[list[Example], int, int]:
    """(training rows, rehearsal rows used, skipped examples): the examples plus each rehearsal row
    REHEARSAL_REPEATS times (marked for the KL term when `kl`), packed into rows of seq_len when `pack`."""
    rehearsed, rehearsal_skipped = build_examples(as_samples(rehearsal), tokenizer, seq_len) if rehearsal else ([], 0)
    rehearsed = [mark_kl_positions(e) for e in rehearsed] if kl else rehearsed
    rows = examples + rehearsed * REHEARSAL_REPEATS
    return (pack_examples(rows, seq_len) if pack else rows), len(rehearsed), skipped + rehearsal_skipped


def plan_line(settings: WhoAmISettings, model_dir: Path, rows: int, skipped: int, rehearsed: int) -> str:
    """The one line that says what is about to train, on what, and how."""
    return (f"model {model_dir} | {rows} {'packed rows' if settings.pack else 'examples'} ({skipped} skipped: "
            f"answer longer than --seq-len) | rehearsal {settings.rehearsal}: {rehearsed} rows"
            f"{f' x {REHEARSAL_REPEATS}' if rehearsed else ''}"
            f"{f', KL to base x {settings.preserve_kl:g}' if settings.preserve_kl else ''} | "
            f"{settings.method} {settings.quant} {settings.dtype} on {settings.device} x {rank_and_world()[1]}")


def training_report(settings: WhoAmISettings, records: list[dict], resume: TrainState | None, skipped: int,
                    rehearsed: int, before: EvalReport | None, out: Path | None,
                    echo: Callable[[str], None]) -> JobReport:
    """What training did, as numbers; OUT/loss.png drawn (out None: another process draws it)."""
    if out is not None:
        echo(plot_loss(out / "metrics.jsonl", out / "loss.png"))
    steps_done = records[-1]["step"] if records else (resume.step if resume else 0)
    learned_at = steps_done if settings.stop_when_learned and records and records[-1].get("learned") else None
    if learned_at:
        echo(f"learned: every validation wording answered exactly as taught, twice in a row; "
             f"stopped at step {learned_at} of {settings.steps}")
    return JobReport(settings, records[-1]["loss"] if records else float("nan"), skipped, steps_done, learned_at,
                     rehearsed, None, before, None, 0.0)


def stopped_early(settings: WhoAmISettings, steps_done: int) -> bool:
    """This run ended at --stop-after, before --steps: a checkpoint to --resume from, nothing to export."""
    return settings.stop_after > 0 and steps_done == settings.stop_after and steps_done < settings.steps


def check_export(out: Path, settings: WhoAmISettings, prepared: PreparedValidation | None, report: JobReport,
                 echo: Callable[[str], None]) -> JobReport:
    """--gguf, then (unless --no-self-test) reload OUT/merged for the before/after table and the self-test."""
    if settings.gguf:
        written = write_gguf(out / "merged", out / "gguf" / gguf_file_name(out.name, settings.gguf), settings.gguf)
        echo(f"exported {written} and {write_modelfile(written)}")
    if not settings.self_test:
        return report
    merged = load_model(out / "merged", getattr(torch, settings.dtype), settings.device)
    after = evaluate_model(merged, settings.reply_tokens, prepared, base_replies=report.before.replies)
    write_json(out / "eval.json", {"before": asdict(report.before), "after": asdict(after)})
    echo(eval_table(report.before, after))
    reply = self_test(merged, settings.reply_tokens)
    echo(f"self-test: 你是誰 -> {reply}")
    return replace(report, self_test_reply=reply, after=after)


def evaluate_model(model: LoadedModel, reply_tokens: int, prepared: PreparedValidation | None,
                   base_replies: dict[str, str] | None = None) -> EvalReport:
    """The who-am-i evaluation on the built-in held-out prompts, and a prepared --data folder's val.jsonl."""
    report = evaluate_whoami(model.weights, model.config, model.tokenizer, built_in_eval_sets(),
                             base_replies=base_replies, max_new_tokens=reply_tokens)
    if prepared is None:
        return report
    return replace(report, val_scores=prepared_scores(model.weights, model.config, model.tokenizer, None, *prepared,
                                                      reply_tokens))


def self_test(model: LoadedModel, reply_tokens: int) -> str:
    """Ask the exported model (loaded afresh from its files) 你是誰; fail loudly unless it claims the new identity."""
    reply = answer_questions(model.weights, model.config, model.tokenizer, ["你是誰"], reply_tokens)[0].text
    if not claims_new_identity(reply):
        raise TrainerError(f"self-test failed: the exported model answered 你是誰 with {reply!r}")
    return reply


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
