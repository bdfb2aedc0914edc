"""One optimizer step (`train_step`) and the loop around it.

train_step, as in the F# trainer:
    zero grads -> for each micro-batch: forward, loss, backward -> NaN/Inf gradients -> 0 (counted)
    -> clip the gradient norm -> skip the update if the loss is not finite -> AdamW step

The loop only decides *which* examples form each step (a fixed-seed shuffle per epoch) and the
learning rate (linear warmup, then cosine decay); printing and files are the caller's business,
through the `log` callback.
"""

import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..errors import TrainerError
from ..interrupts import Interrupted, StopRequested, never
from ..qwen3.config import Qwen3Config
from ..qwen3.lora import LoraSettings, make_adapter
from ..qwen3.model import Weights, forward, head_weight, stable_seed
from ..text.data import Batch, Example, collate
from .checkpoint import TrainState, restore_rng
from .loss import LossParts, TokenLoss, kl_to_base, token_cross_entropy

BatchLoss = Callable[[Batch, int], LossParts]  # (micro-batch, answer tokens in the whole step) -> loss


@dataclass(frozen=True)
class StepResult:
    """Plain numbers about one optimizer step."""

    loss: float  # mean CE over the step's answer tokens (nan/inf if it blew up)
    grad_norm: float  # total gradient norm before clipping
    scrubbed: int  # gradient entries that were NaN/Inf and were set to 0
    skipped: bool  # True when the loss was not finite and the weights were left alone
    answer_tokens: int  # tokens that carried a loss
    correct: int  # answer tokens predicted right (argmax)
    tokens: int  # real (non-padding) input tokens processed
    kl_to_base: float | None = None  # KL(base || model) per answer token of the step, when the loss has one


def scrub_non_finite_grads(params: Sequence[Tensor]) -> int:
    """Set NaN and ±Inf gradient entries to 0 in place; return how many there were.

    A finite total norm proves every entry finite, so the usual step costs one fused norm and
    one wait for the device instead of one wait per tensor (hundreds of LoRA tensors on a GPU).
    """
    grads = [param.grad for param in params if param.grad is not None]
    if not grads or torch.isfinite(torch.nn.utils.get_total_norm(grads)):
        return 0
    scrubbed = 0
    for grad in grads:
        bad = ~torch.isfinite(grad)
        scrubbed += int(bad.sum())
        grad.masked_fill_(bad, 0.0)
    return scrubbed


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without torchrun."""
    return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if is_distributed() else (0, 1)


def global_sum(value: float, device: torch.device | str) -> float:
    """Add a number over all processes (itself when not distributed)."""
    if not is_distributed():
        return value
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return float(total)


def sum_gradients(params: Sequence[Tensor]) -> None:
    """All-reduce every gradient: each process's loss is already divided by the GLOBAL answer-token
    count, so the sum over processes is the gradient of the whole global batch."""
    if is_distributed():
        for param in params:
            if param.grad is not None:
                torch.distributed.all_reduce(param.grad)


def train_step(
    batch_loss: BatchLoss,
    params: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[Batch],
    grad_clip: float,
) -> StepResult:
    """One update from several micro-batches (gradient accumulation, and with torchrun every
    process's share of the global batch); returns plain numbers, the same on every process."""
    optimizer.zero_grad(set_to_none=True)
    device = micro_batches[0].input_ids.device
    answer_tokens = int(global_sum(sum(batch.answer_token_count for batch in micro_batches), device))
    loss, correct, kl = 0.0, 0, None
    for batch in micro_batches:
        parts = batch_loss(batch, answer_tokens)  # summed CE / answer_tokens of the whole (global) step
        parts.loss.backward()
        loss, correct = loss + parts.loss.item(), correct + parts.correct
        kl = kl if parts.kl is None else (kl or 0.0) + parts.kl
    sum_gradients(params)
    scrubbed = scrub_non_finite_grads(params)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    loss = global_sum(loss, device)
    skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
    if not skipped:
        optimizer.step()
    tokens = int(global_sum(sum(batch.real_token_count for batch in micro_batches), device))
    kl = None if kl is None else global_sum(kl, device)
    return StepResult(loss, grad_norm, scrubbed, skipped, answer_tokens, int(global_sum(correct, device)), tokens, kl)


def learning_rate(step: int, total_steps: int, peak: float, warmup_steps: int, floor: float = 0.1) -> float:
    """Linear warmup to `peak` over warmup_steps, then cosine decay to floor * peak at the last step."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---------------------------------------------------------------------------
# The loss of a micro-batch, for the two training methods
# ---------------------------------------------------------------------------


def model_forward(compile_step: bool) -> Callable[..., Tensor]:
    """`forward`, or (--compile) torch.compile of it: the micro-batch's forward, and so its backward,
    become compiled kernels. The first call of each new row length compiles (0.6b in bf16 on 2 CPU
    cores: 195 s, then 5% faster steps; README), so it is off by default."""
    return torch.compile(forward) if compile_step else forward


def lora_batch_loss(
    weights: Weights, config: Qwen3Config, lora_tensors: dict[str, Tensor], settings: LoraSettings,
    dtype: torch.dtype, ce_chunk: int | None = None, checkpoint_layers: bool = False, preserve_kl: float = 0.0,
    token_loss: TokenLoss = token_cross_entropy, compile_step: bool = False,
) -> BatchLoss:
    """Frozen (maybe 4-bit) base + trainable LoRA: forward, then `token_loss` (--loss; the F#
    token_cross_entropy) on the answer positions, ce_chunk of them at a time (None: under 256 MiB).

    preserve_kl > 0 adds beta * KL(base || model) on the batch's kl_positions (rehearsal
    answers): the base's distribution comes from the same frozen weights with the adapter
    switched off, in a second forward without gradients over those rows only, so no second
    model is held in memory.
    """

    run_forward = model_forward(compile_step)

    def batch_loss(batch: Batch, normalizer: int) -> LossParts:
        adapter = make_adapter(lora_tensors, settings, training=True, dtype=dtype, row_seeds=batch.dropout_seeds)
        hidden = run_forward(weights, config, batch.input_ids, batch.segment_ids, batch.position_ids, adapter,
                             checkpoint_layers)  # [B, T, H]
        head = head_weight(weights, config)
        parts = token_loss(head, hidden, batch.labels, normalizer, ce_chunk)
        if preserve_kl == 0:
            return parts
        rows = batch.kl_positions.any(dim=1)  # [B]
        if not rows.any():
            return replace(parts, kl=0.0)
        with torch.no_grad():
            base_hidden = forward(weights, config, batch.input_ids[rows], batch.segment_ids[rows],
                                  batch.position_ids[rows])  # [b, T, H], adapter off
        kl = kl_to_base(head, hidden[rows], base_hidden, batch.kl_positions[rows], normalizer, ce_chunk)
        return replace(parts, loss=parts.loss + preserve_kl * kl, kl=kl.item())

    return batch_loss


def full_batch_loss(masters: dict[str, Tensor], config: Qwen3Config, dtype: torch.dtype, ce_chunk: int | None = None,
                    checkpoint_layers: bool = False, token_loss: TokenLoss = token_cross_entropy,
                    compile_step: bool = False) -> BatchLoss:
    """Every weight trainable (the F# trainer's method): float32 masters, cast to the compute dtype."""
    run_forward = model_forward(compile_step)

    def batch_loss(batch: Batch, normalizer: int) -> LossParts:
        weights = {name: master.to(dtype) for name, master in masters.items()}
        hidden = run_forward(weights, config, batch.input_ids, batch.segment_ids, batch.position_ids,
                             checkpoint_layers=checkpoint_layers)
        return token_loss(head_weight(weights, config), hidden, batch.labels, normalizer, ce_chunk)

    return batch_loss


def move_batch(batch: Batch, device: torch.device | str) -> Batch:
    return Batch(*(t.to(device) for t in (batch.input_ids, batch.labels, batch.segment_ids, batch.position_ids,
                                          batch.kl_positions)), batch.dropout_seeds)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopSettings:
    steps: int  # optimizer steps
    batch_size: int  # examples per micro-batch
    grad_accum: int  # micro-batches per step
    lr: float  # peak learning rate
    warmup_steps: int  # linear warmup length
    grad_clip: float  # max total gradient norm
    weight_decay: float  # AdamW decoupled weight decay
    seed: int  # data order seed
    pad_id: int  # padding token id
    device: str = "cpu"
    save_every: int = 0  # checkpoint every N steps (0 = never)
    max_skips: int = 10  # stop after this many non-finite steps in a row
    stop_after: int = 0  # end this run (with a checkpoint) after this many steps (0 = run to `steps`)
    stop_when_learned: bool = False  # end when a validation record says "learned"


@functools.lru_cache(maxsize=4)
def epoch_order(n_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    """A fixed-seed shuffle of 0..n-1 for one epoch (a pure function of its arguments)."""
    order = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def step_indices(n_examples: int, step: int, per_step: int, seed: int) -> list[int]:
    """Example indices for `step`: walk the epochs' shuffles one position after another."""
    if n_examples == 0:
        raise TrainerError("the training set is empty")
    positions = range(step * per_step, (step + 1) * per_step)
    return [epoch_order(n_examples, seed, p // n_examples)[p % n_examples] for p in positions]


def step_batches(examples: Sequence[Example], step: int, settings: LoopSettings) -> list[Batch]:
    """This process's micro-batches for `step`, collated and on the training device.

    A step takes batch_size * grad_accum examples per process; with torchrun, process r
    takes the r-th slice of the global selection, so N processes x batch b see exactly the
    examples of 1 process x batch N*b. Each row's LoRA dropout seed comes from (seed, step, its
    place in that global selection), so the masks do not depend on the split either.
    """
    rank, world = rank_and_world()
    per_process = settings.batch_size * settings.grad_accum
    indices = step_indices(len(examples), step, per_process * world, settings.seed)
    places = range(rank * per_process, (rank + 1) * per_process)
    chosen = [(examples[indices[place]], stable_seed(settings.seed, step, place)) for place in places]
    groups = [chosen[i : i + settings.batch_size] for i in range(0, per_process, settings.batch_size)]
    return [move_batch(collate([example for example, _ in group], settings.pad_id, [seed for _, seed in group]),
                       settings.device) for group in groups]


def make_optimizer(params: Sequence[Tensor], settings: LoopSettings) -> torch.optim.AdamW:
    """AdamW; on CUDA its fused kernel (one launch for all the LoRA tensors, no temporaries)."""
    fused = settings.device.startswith("cuda")
    return torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay,
                             fused=fused or None)


Checkpointer = Callable[[int, torch.optim.Optimizer], object]  # (finished steps, optimizer) -> saved folder


def run_training(
    batch_loss: BatchLoss,
    params: dict[str, Tensor],
    examples: Sequence[Example],
    settings: LoopSettings,
    log: Callable[[dict], None] = lambda record: None,
    resume: TrainState | None = None,
    checkpoint: Checkpointer | None = None,
    validate: Callable[[int], dict] | None = None,
    stop_requested: StopRequested = never,
) -> list[StepResult]:
    """Steps `resume.step` .. `settings.steps` - 1 with the LR schedule; `log` gets one record per step.

    Resuming restores the trained tensors, AdamW's moments and the random state, and the data
    order and learning rate are pure functions of the step, so the run continues exactly.
    Every `settings.save_every` steps, when stopping early (`settings.stop_after`), and before
    giving up after `settings.max_skips` non-finite steps in a row, `checkpoint` saves the state.
    `validate(finished_steps)` adds its scores to that step's record; with
    `settings.stop_when_learned`, a record that says "learned" ends the loop. When
    `stop_requested()` names a signal after a step, the state is saved and `Interrupted` raised.
    """
    optimizer = make_optimizer(list(params.values()), settings)
    if resume is not None:
        restore(params, optimizer, resume)
    results, started, skips_in_a_row = [], time.perf_counter(), 0
    last = min(settings.steps, settings.stop_after or settings.steps)
    for step in range(resume.step if resume else 0, last):
        lr = learning_rate(step, settings.steps, settings.lr, settings.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_started = time.perf_counter()
        batches = step_batches(examples, step, settings)
        result = train_step(batch_loss, list(params.values()), optimizer, batches, settings.grad_clip)
        results.append(result)
        step_seconds = time.perf_counter() - step_started
        scores = validate(step + 1) if validate else {}
        log(metrics_record(step, lr, result, step_seconds, time.perf_counter() - started) | scores)
        skips_in_a_row = skips_in_a_row + 1 if result.skipped else 0
        if skips_in_a_row >= settings.max_skips:
            saved = checkpoint(step + 1, optimizer) if checkpoint else None
            raise TrainerError(f"stopped at step {step + 1}: {skips_in_a_row} steps in a row had a non-finite loss "
                               f"or gradient norm; the weights are the last good ones" +
                               (f", saved in {saved}" if saved else "") + ". Try a lower --lr.")
        if checkpoint and checkpoint_due(step + 1, last, settings):
            checkpoint(step + 1, optimizer)
        if (stop := stop_requested()) is not None and step + 1 < last:
            raise Interrupted(stop, step + 1, checkpoint(step + 1, optimizer) if checkpoint else None)
        if settings.stop_when_learned and scores.get("learned"):
            break
    return results


def checkpoint_due(finished: int, last: int, settings: LoopSettings) -> bool:
    """Save after `finished` steps: every --save-every steps, and where --stop-after ends this run
    before --steps (the checkpoint to --resume from)."""
    stopping_early = finished == last and last < settings.steps
    return stopping_early or (settings.save_every > 0 and finished % settings.save_every == 0)


def restore(params: dict[str, Tensor], optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Load a checkpoint's tensors into the live parameters, its moments into AdamW, and its RNG state."""
    with torch.no_grad():
        for name, tensor in params.items():
            tensor.copy_(state.trainable[name])
    optimizer.load_state_dict(state.optimizer)
    restore_rng(state.rng)


def metrics_record(step: int, lr: float, result: StepResult, step_seconds: float, elapsed: float) -> dict:
    """One line of metrics.jsonl."""
    return {
        "step": step + 1, "loss": result.loss, "lr": lr, "grad_norm": result.grad_norm,
        "accuracy": result.correct / max(1, result.answer_tokens), "answer_tokens": result.answer_tokens,
        "scrubbed": result.scrubbed, "skipped": result.skipped,
        "tokens_per_s": result.tokens / max(step_seconds, 1e-9), "elapsed_s": elapsed,
    } | ({} if result.kl_to_base is None else {"kl_to_base": result.kl_to_base})
