"""The job's training stage: the tensors to train and the loss of a micro-batch, validation while
training, and the loop with its progress bar, metrics.jsonl and checkpoints.

    load the base (4-bit for --method lora) -> LoRA tensors (or float32 masters for --method full)
      -> batch loss: forward, then the --loss function (token_cross_entropy) on the answer positions
      -> run_training: train_step per step, validation every --val-every steps, checkpoints
"""

import json
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..interrupts import stop_on_signals
from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config
from ..qwen3.lora import LoraSettings, init_lora, make_adapter
from ..qwen3.model import LoraAdapter, Weights
from ..qwen3.quant import quant_transform
from ..qwen3.weights import load_weights
from ..text.chat import ChatFormat
from ..text.data import Example
from ..text.tokenizer import Tokenizer
from ..text.whoami import NEW_IDENTITY, whoami_splits
from ..training.checkpoint import TrainState, load_checkpoint, resolve_resume, save_checkpoint
from ..training.loss import TokenLoss
from ..training.train import BatchLoss, LoopSettings, full_batch_loss, lora_batch_loss, run_training
from .examples import PreparedValidation, build_examples
from .rehearsal import RehearsalRow, as_samples
from .stages import StageBar
from .validation import Validation, ValidationData, make_validation, validation_scores


@dataclass(frozen=True)
class TrainingSetup:
    """Everything loaded and checked before the first file is written to OUT."""

    params: dict[str, torch.Tensor]  # the tensors to train: LoRA A and B, or every weight (--method full)
    batch_loss: BatchLoss
    weights: Weights  # the weights the loss runs on: frozen (maybe 4-bit) for lora, the live masters for full
    lora: LoraSettings | None  # None: --method full
    dtype: torch.dtype  # the compute dtype
    resume: TrainState | None = None  # the checkpoint to continue, if --resume

    def adapter(self) -> LoraAdapter | None:
        """The model as it is now, for generation: the LoRA tensors in the compute dtype (None for
        --method full, whose live masters are the weights)."""
        return None if self.lora is None else make_adapter(self.params, self.lora, training=False, dtype=self.dtype)


@dataclass(frozen=True)
class LossChoices:
    """How a micro-batch is scored: --loss, --ce-chunk, --grad-checkpoint, --preserve-kl, --compile."""

    token_loss: TokenLoss  # trainer.training.loss.LOSSES[--loss]
    ce_chunk: int | None  # answer positions per chunk of logits (None: under 256 MiB)
    checkpoint_layers: bool  # recompute each layer in backward
    preserve_kl: float  # beta of KL(base || model) on rehearsal answers (0: off)
    compile_step: bool = False  # torch.compile the forward (and so the backward) of each micro-batch


def prepare_training(model_dir: Path, config: Qwen3Config, lora: LoraSettings | None, dtype: torch.dtype,
                     device: str, quant: str, seed: int, loss: LossChoices, resume_dir: Path | None,
                     progress: Progress = no_progress) -> TrainingSetup:
    """Load the weights and the --resume checkpoint (every name and shape checked) up front, so a bad
    model folder or checkpoint fails before OUT is touched. lora None: every weight trains, float32.
    progress(1) per tensor loaded."""
    torch.manual_seed(seed)
    if lora is None:
        masters = {n: t.requires_grad_()
                   for n, t in load_weights(model_dir, config, torch.float32, device, progress=progress).items()}
        batch_loss = full_batch_loss(masters, config, dtype, loss.ce_chunk, loss.checkpoint_layers, loss.token_loss,
                                     loss.compile_step)
        params, weights = masters, masters
    else:
        weights = load_weights(model_dir, config, dtype, device, transform=quant_transform(quant), progress=progress)
        params = init_lora(config, lora, seed, device)
        batch_loss = lora_batch_loss(weights, config, params, lora, dtype, loss.ce_chunk, loss.checkpoint_layers,
                                     loss.preserve_kl, loss.token_loss, loss.compile_step)
    shapes = {name: tuple(t.shape) for name, t in params.items()}
    resume = load_checkpoint(resume_dir, shapes) if resume_dir else None
    return TrainingSetup(params, batch_loss, weights, lora, dtype, resume)


def resume_folder(resume: str | None, out: Path) -> Path | None:
    """--resume latest or a folder, as a checkpoint folder (None: a fresh start)."""
    return resolve_resume(resume, out / "checkpoints") if resume else None


Stage = Callable[..., AbstractContextManager[StageBar]]  # trainer.job.stages.Stages.stage: a timed stage


def validation(every: int, setup: TrainingSetup, config: Qwen3Config, tokenizer: Tokenizer,
               rehearsal: Sequence[RehearsalRow], prepared: PreparedValidation | None, seq_len: int,
               reply_tokens: int, stage: Stage, chat: ChatFormat = ChatFormat()) -> Validation | None:
    """Scores of the model as trained so far, every `every` steps (None: never): a prepared folder's
    val.jsonl, else the validation identity wordings; held-out rehearsal rows in both cases. Each
    validation runs as the stage "validation", with a bar of its own below training's."""
    if not every:
        return None
    held_out = as_samples(rehearsal, "validation")
    examples = tuple(build_examples(held_out, tokenizer, seq_len, chat.family)[0]) if held_out else ()
    questions = () if prepared is not None else whoami_splits().identity_validation
    data = ValidationData(questions, NEW_IDENTITY, examples, *(prepared or ((), ())), chat=chat)

    def score() -> dict[str, float]:
        with stage("validation", total=data.size, unit="row", transient=True) as bar:
            return validation_scores(setup.weights, config, tokenizer, setup.adapter(), data, reply_tokens, bar.update)

    return make_validation(score, every)


def metrics_file(out: Path, resume_step: int | None):
    """OUT/metrics.jsonl opened for this run: fresh, or (on resume) keeping the steps already done."""
    path = out / "metrics.jsonl"
    kept = []
    if resume_step is not None and path.is_file():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return path.open("a", encoding="utf-8")


def train_with_metrics(setup: TrainingSetup, examples: list[Example], loop: LoopSettings, out: Path,
                       keep_checkpoints: int, main: bool, bar: StageBar, validate: Validation | None) -> list[dict]:
    """Train (or continue the checkpoint): setup.params become what was learned. `bar` (started at
    the resumed step) shows loss, tokens/s and validation hits; one metrics.jsonl line per step;
    returns this run's records. Only the main process (rank 0 under torchrun) writes files. SIGINT
    or SIGTERM meanwhile: finish the step, save a checkpoint, raise Interrupted (see trainer.interrupts)."""
    resume_step = setup.resume.step if setup.resume else None
    records: list[dict] = []
    metrics_sink = metrics_file(out, resume_step) if main else open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    save = lambda step, optimizer: save_checkpoint(out / "checkpoints", step, setup.params, optimizer,  # noqa: E731
                                                   keep_checkpoints)
    with metrics_sink as metrics:
        def log(record: dict) -> None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            records.append(record)
            shown = {"loss": f"{record['loss']:.4f}", "tok_s": f"{record['tokens_per_s']:.0f}"}
            hits = [r["val_identity_hit"] for r in records if "val_identity_hit" in r]
            bar.set_postfix(shown | ({"val_hit": f"{hits[-1]:.0%}"} if hits else {}))
            bar.update(1)

        with stop_on_signals() as stop_requested:
            run_training(setup.batch_loss, setup.params, examples, loop, log, setup.resume, save if main else None,
                         validate, stop_requested)
    return records


