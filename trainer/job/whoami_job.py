"""The main job: teach a Qwen3 a new identity with QLoRA, export it, and prove it by generation.

    settings -> model folder (download, or build the tiny world) -> tokenizer, 4-bit base
      -> examples (built-in identity rows or --data)                        job/examples.py
      -> rehearsal: the base's own replies to control and ordinary prompts  job/rehearsal.py
      -> LoRA training (train_step per step), validation, stop when learned job/training_run.py
      -> export OUT/adapter (PEFT) and OUT/merged (HF, bf16, merged into the ORIGINAL weights)  job/export.py
      -> checks: merged/ tensor by tensor, adapter/ reloaded onto the 4-bit base for the
         before/after table (OUT/eval.json) and the self-test: token for token on 你是誰 and
         held-out prompts (--data: its first validation rows), then 你是誰 and --probe claims  job/checks.py
      -> the training model freed; merged/, where a dense copy fits, held to the trained
         model's replies and asked the claims itself
      -> the stages' times and peak memory -> OUT/timings.json                  job/stages.py

Every generation before the last step runs on the weights that train, adapter off or on, so
one copy of the base is in memory from loading to the self-test.

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
from ..qwen3.lora import load_adapter
from ..qwen3.model import LoraAdapter
from ..qwen3.weights import expected_shapes
from ..text.chat import ChatFormat
from ..text.data import Example, pack_examples
from ..text.tokenizer import Tokenizer, load_tokenizer
from ..training.checkpoint import TrainState
from ..training.loss import LOSSES
from ..training.train import is_distributed, rank_and_world
from .checks import (MERGED_NLL_TOLERANCE, ReplyFit, SelfTestPrompts, TrainedReplies, built_in_prompts,
                     answer_of, check_merged_replies, claim_indices, data_prompts, dense_gb, merged_check_due,
                     self_test)
from .evaluate import EvalReport, Probe, built_in_eval_sets, evaluate_whoami, questions_of
from .examples import PreparedValidation, build_examples, mark_kl_positions, prepared_validation, training_samples
from .export import check_merged, export, merged_tensors
from .gguf_export import gguf_file_name, write_gguf, write_modelfile
from .loading import (LoadedModel, dtype_line, load_inference_adapter, load_model, resolve_device, resolve_dtype,
                      resolve_model)
from .plot import plot_loss
from .rehearsal import REHEARSAL_FILE, RehearsalRow, as_samples, prompts_to_answer, rehearsal_rows
from .settings import WhoAmISettings, lora_settings, loop_settings, probes, reply_budget, resolve_settings
from .stages import Stages
from .template_check import check_model_template, served_format
from .training_run import LossChoices, TrainingSetup, prepare_training, resume_folder, train_with_metrics, validation
from .validation import prepared_scores

REHEARSAL_REPEATS = 3  # each rehearsal row appears this often among the built-in identity rows
TIMINGS_FILE = "timings.json"



@dataclass(frozen=True)
class JobReport:
    settings: WhoAmISettings
    final_loss: float
    skipped_examples: int
    steps_done: int  # optimizer steps at the end of this run (fewer than --steps when stopped as learned)
    learned_at: int | None  # the step whose validation stopped training, if it did
    rehearsal_rows: int  # rehearsal rows trained on (each REHEARSAL_REPEATS times)
    self_test_reply: str | None  # the trained model's reply to the first self-test prompt (built-in set: 你是誰)
    before: EvalReport | None
    after: EvalReport | None
    seconds: float
    trained: TrainedReplies | None = None  # the self-test's prompts and the trained model's replies to them
    merged_reply: str | None = None  # merged/'s own reply to 你是誰 (built-in set), when --check-merged asked it
    merged_fit: ReplyFit | None = None  # how merged/ scores the trained model's self-test replies


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

    Every stage shows a progress bar on a terminal (a line in a log); the job ends with a table of
    the stages' times and peak memory, also written to OUT/timings.json. Under torchrun every process
    trains on its share of each batch; only rank 0 evaluates, writes files and prints.
    """
    started = time.perf_counter()
    dtype_reason = resolve_dtype(settings.dtype, resolve_device(settings.device))[1]
    settings = start_distributed(resolve_settings(settings))
    main = rank_and_world()[0] == 0  # with torchrun, only rank 0 evaluates, writes files and prints
    echo = echo if main else (lambda text: None)
    out, model_dir = Path(settings.out), resolve_model(settings.model)
    echo(dtype_line(settings.dtype, dtype_reason))
    check_out_dir(out, model_dir)
    chat = served_format(check_model_template(model_dir, settings.trust_our_template,
                                              warn=lambda text: echo(f"warning: {text}")), settings.thinking)
    echo(chat_line(chat, reply_budget(settings, chat)))
    stages, ended = Stages(echo, progress and main, cuda=settings.device.startswith("cuda")), "finished"
    try:
        report = train_and_export(settings, model_dir, out, main, echo, stages, chat)
        # the training model is gone now: merged/ may be loaded on its own
        report = ask_merged_if_due(settings, out, report, stages, echo) if report.after is not None else report
    except BaseException as error:
        ended = str(error) if isinstance(error, TrainerError) else f"{type(error).__name__} {error}".strip()
        raise
    finally:
        if main and out.is_dir():
            stages.finish(out / TIMINGS_FILE, ended)
    return replace(report, seconds=time.perf_counter() - started)


def chat_line(chat: ChatFormat, budget: int) -> str:
    """The one line that says how the model is prompted, and how long a reply may be where it thinks."""
    switch = {False: ", asked with thinking off", True: ", asked with thinking on"}.get(chat.enable_thinking, "")
    budget_note = f" (replies of up to {budget} tokens, reasoning included)" if chat.thinks else ""
    return f"chat format {chat.family}{switch}{budget_note}"


def train_and_export(settings: WhoAmISettings, model_dir: Path, out: Path, main: bool, echo: Callable[[str], None],
                     stages: Stages, chat: ChatFormat) -> JobReport:
    """Every stage that needs the training model, which is the only copy of the base in memory: load,
    base answers (adapter off), rehearsal, training, export, and the checks (reloaded adapter on)."""
    dtype, lora, budget = getattr(torch, settings.dtype), lora_settings(settings), reply_budget(settings, chat)
    config, tokenizer = load_config(model_dir), load_tokenizer(model_dir)
    with stages.stage("examples"):
        samples = training_samples(settings.data, settings.strict, echo)
        examples, skipped = build_examples(samples, tokenizer, settings.seq_len, chat.family)
        scored = settings.val_every or (settings.self_test and main)  # a prepared folder's val.jsonl is read
        prepared = prepared_validation(settings.data, tokenizer, settings.seq_len, chat.family) if scored else None
        asked = built_in_prompts(built_in_eval_sets(), probes(settings), chat) if settings.data is None else \
            data_prompts(prepared[0] if prepared and prepared[0] else samples, probes(settings), chat)
    loss = LossChoices(LOSSES[settings.loss], settings.ce_chunk, settings.grad_checkpoint, settings.preserve_kl,
                       settings.compile)
    with stages.stage("load", total=len(expected_shapes(config)), unit="tensor") as bar:
        setup = prepare_training(model_dir, config, lora, dtype, settings.device, settings.quant, settings.seed, loss,
                                 resume_folder(settings.resume, out), bar.update)
    model = LoadedModel(model_dir, config, tokenizer, setup.weights, chat)  # every reply below comes from these weights
    before = evaluate_stage(stages, "base answers", model, None, budget, prepared, asked.probes,
                            chat) if settings.self_test and main else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", asdict(settings))
    reuse = settings.resume is not None
    with stages.stage("rehearsal", total=prompts_to_answer(settings.rehearsal, out / REHEARSAL_FILE, reuse),
                      unit="prompt") as bar:
        rehearsal = rehearsal_rows(settings.rehearsal, setup.weights, config, tokenizer, budget,
                                   out / REHEARSAL_FILE, reuse=reuse, write=main, progress=bar.update, chat=chat)
    rows, rehearsed, skipped = with_rehearsal(examples, skipped, rehearsal, tokenizer, settings.seq_len,
                                              kl=settings.preserve_kl > 0, pack=settings.pack, family=chat.family)
    echo(plan_line(settings, model_dir, len(rows), skipped, rehearsed))
    validate = validation(settings.val_every, setup, config, tokenizer, rehearsal, prepared, settings.seq_len,
                          budget, stages.stage, chat)
    loop = loop_settings(settings, tokenizer.endoftext_id)
    with stages.stage("training", total=loop.steps, unit="step", initial=setup.resume.step if setup.resume else 0) as bar:
        records = train_with_metrics(setup, rows, loop, out, settings.keep_checkpoints, main, bar, validate)
    report = training_report(settings, records, setup.resume, skipped, rehearsed, before, out if main else None, echo)
    try:
        if report.learned_at is None and stopped_early(settings, report.steps_done):
            echo(f"stopped after step {settings.stop_after}; continue with --resume")
        elif settings.export and main:
            with stages.stage("export", total=len(expected_shapes(config)), unit="tensor") as bar:
                export(setup.params, lora, settings.model, model_dir, config, out, bar.update)
            echo(f"exported {out / 'merged'}" + (f" and {out / 'adapter'}" if lora else ""))
            report = check_export(model, setup, out, settings, prepared, asked, report, stages, echo)
    finally:  # rank 0 reaches the barrier even when its export or self-test fails, so the others end quietly
        if is_distributed():
            torch.distributed.barrier()
    return report


def with_rehearsal(examples: list[Example], skipped: int, rehearsal: Sequence[RehearsalRow], tokenizer: Tokenizer,
                   seq_len: int, kl: bool, pack: bool, family: str) -> tuple[list[Example], int, int]:
    """(training rows, rehearsal rows used, skipped examples): the examples plus each rehearsal row
    REHEARSAL_REPEATS times (marked for the KL term when `kl`), packed into rows of seq_len when `pack`."""
    rehearsed, rehearsal_skipped = build_examples(as_samples(rehearsal), tokenizer, seq_len, family) \
        if rehearsal else ([], 0)
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


def check_export(model: LoadedModel, setup: TrainingSetup, out: Path, settings: WhoAmISettings,
                 prepared: PreparedValidation | None, asked: SelfTestPrompts, report: JobReport, stages: Stages,
                 echo: Callable[[str], None]) -> JobReport:
    """--gguf; then (unless --no-self-test) merged/ checked tensor by tensor, adapter/ reloaded onto the
    training weights for the after column of the table, and the self-test (see job/checks.py)."""
    shapes, chat = expected_shapes(model.config), asked.chat  # the format the prompts were rendered in
    budget = reply_budget(settings, chat)
    if settings.gguf:
        with stages.stage("gguf", total=len(shapes), unit="tensor") as bar:
            written = write_gguf(out / "merged", out / "gguf" / gguf_file_name(out.name, settings.gguf), settings.gguf,
                                 bar.update)
        echo(f"exported {written} and {write_modelfile(written, chat.family)}")  # merged/ keeps the base's template
    if not settings.self_test:
        return report
    with stages.stage("check merged/", total=len(shapes), unit="tensor") as bar:
        learned = load_adapter(out / "adapter")[0] if setup.lora else setup.params  # as written to disk
        check_merged(out / "merged", merged_tensors(learned, setup.lora, model.folder, model.config), model.config,
                     bar.update)
        exported = load_inference_adapter(out / "adapter", model.config, setup.dtype, settings.device) \
            if setup.lora else None
    after = evaluate_stage(stages, "after answers", model, exported, budget, prepared, asked.probes,
                           chat, base_replies=report.before.replies)
    write_json(out / "eval.json", {"before": asdict(report.before), "after": asdict(after)})
    echo(eval_table(report.before, after, built_in=settings.data is None, scored=prepared is not None))
    with stages.stage("self-test", total=len(asked.prompts) * (2 if exported else 1), unit="prompt") as bar:
        trained = self_test(model, setup.adapter(), exported, asked, budget, bar.update)
    echo(self_test_lines(model, trained, exported is not None))
    return replace(report, self_test_reply=answer_of(model, asked, trained.replies[0]), after=after, trained=trained)


def self_test_lines(model: LoadedModel, trained: TrainedReplies, adapter: bool) -> str:
    """What the self-test proved: the claims' replies, and how many prompts the reloaded adapter reproduced."""
    asked = trained.asked
    lines = [f"self-test: {asked.labels[i]} -> {answer_of(model, asked, trained.replies[i])}"
             for i in claim_indices(asked)]
    rows = len(asked.prompts) - len(asked.probes) - asked.identity
    what = f"{len(asked.prompts)} prompts" if asked.identity else \
        f"the first {rows} validation rows" + (f" and {len(asked.probes)} probes" if asked.probes else "")
    lines.append(f"self-test: the reloaded adapter gives the trained model's replies, token for token, on {what}"
                 if adapter else f"self-test: the trained model answered {what} (merged/ is held to these replies)")
    return "\n".join(lines)


def ask_merged_if_due(settings: WhoAmISettings, out: Path, report: JobReport, stages: Stages,
                      echo: Callable[[str], None]) -> JobReport:
    """--check-merged: load merged/ densely, alone, hold it to the trained model's self-test replies and
    ask it the claims (你是誰, --probe); auto only where it fits."""
    dtype, config = getattr(torch, settings.dtype), load_config(out / "merged")
    due, why = merged_check_due(settings.check_merged, dense_gb(config, dtype), stages.peak())
    echo(f"merged/ asked itself: {'yes' if due else 'no'}, {why}")
    if not due:
        return report
    with stages.stage("load merged/", total=len(expected_shapes(config)), unit="tensor") as bar:
        merged = load_model(out / "merged", dtype, settings.device, progress=bar.update)
    asked = report.trained.asked
    with stages.stage("merged/ answers", total=len(asked.prompts) + len(claim_indices(asked)), unit="prompt") as bar:
        fit, texts = check_merged_replies(merged, report.trained, reply_budget(settings, asked.chat), bar.update)
    echo("\n".join([f"merged/: {asked.labels[i]} -> {text}" for i, text in texts.items()] + [
        f"merged/: the self-test replies score {fit.nll:.3f} nats per token here, {report.trained.fit.nll:.3f} on the "
        f"trained model (at most {MERGED_NLL_TOLERANCE} more allowed); it picks {fit.picks:.1%} of their {fit.tokens} "
        f"tokens itself"]))
    return replace(report, merged_reply=texts.get(0) if asked.identity else None, merged_fit=fit)


def evaluate_stage(stages: Stages, name: str, model: LoadedModel, lora: LoraAdapter | None, reply_tokens: int,
                   prepared: PreparedValidation | None, probes: Sequence[Probe], chat: ChatFormat,
                   base_replies: dict[str, str] | None = None) -> EvalReport:
    """The who-am-i evaluation on the built-in held-out prompts and the probes, and a prepared --data
    folder's val.jsonl, as stage `name`."""
    sets = built_in_eval_sets()
    size = len(questions_of(sets, probes)) + (sum(map(len, prepared)) if prepared else 0)
    with stages.stage(name, total=size, unit="prompt") as bar:
        report = evaluate_whoami(model.weights, model.config, model.tokenizer, sets, lora, base_replies, reply_tokens,
                                 bar.update, probes, chat)
        if prepared is None:
            return report
        return replace(report, val_scores=prepared_scores(model.weights, model.config, model.tokenizer, lora,
                                                          *prepared, reply_tokens, bar.update, chat))


def eval_table(before: EvalReport, after: EvalReport, built_in: bool, scored: bool) -> str:
    """The before/after table; "unchanged" compares with the base, so the base's own column says "base".

    With --data it leads with the data's own val.jsonl scores; the identity hit rate is the built-in
    set's, the probe hit rate shows with --probe, and the retention rows stay for any fine-tune."""
    percent = "{:.1%}"
    own = [("val.jsonl answer perplexity", "val_perplexity", "{:.3g}"),
           ("val.jsonl answer token accuracy", "val_token_accuracy", percent),
           ("val.jsonl usable replies", "val_usability", percent),
           ("val.jsonl JSON replies that parse", "val_json_valid", percent)]
    rates = [("identity hit rate (held-out wordings)", "identity_hit_rate", built_in),
             ("--probe replies with what was expected", "probe_hit_rate", before.probe_hit_rate is not None),
             ("leak: held-out prompts answered with it", "leak_rate", True),
             ("fact retention (held-out facts)", "fact_retention", True),
             ("unchanged replies (held-out prompts)", "unchanged_rate", True),
             ("near misses (about the user, greetings)", "near_miss_rate", after.near_miss_rate is not None)]
    cell = lambda value, form=percent: "base" if value is None else form.format(value)  # noqa: E731
    lines = [f"{'':<40} {'before':>8} {'after':>8}"]
    scores = [(label, before.val_scores[key], after.val_scores[key], form) for label, key, form in own
              if before.val_scores and after.val_scores and key in before.val_scores]
    rows = [(label, getattr(before, key), getattr(after, key), percent) for label, key, shown in rates if shown]
    for label, first, second, form in (rows + scores if built_in else scores + rows):
        lines.append(f"{label:<40} {cell(first, form):>8} {cell(second, form):>8}")
    if not built_in and not scored:
        lines.append("(no val.jsonl to score: --data is one file; scripts/prepare_data.py splits one off)")
    return "\n".join(lines)
