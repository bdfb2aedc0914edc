"""Our LoRA training step against transformers + peft, on the same model, data and adapter.

    python scripts/bench.py --shape tiny --stack both              # table + ratios ours/reference
    python scripts/bench.py --shape 4b --device cuda --dtype bfloat16 --quant nf4 --seq-len 2048 --batch-size 1

Each stack runs in its own process (`--stack both` starts this script twice), so neither
pays for the other's imports, allocator state or peak memory. Both see:
- the same random Qwen3 of the preset's shape: every tensor is rebuilt from (seed, name) by
  make_random_checkpoint.random_tensor, or, with --checkpoint (and always for --quant nf4,
  which transformers can only apply while loading), read from the same folder;
- the same rows: seq-len random tokens whose last ANSWER_FRACTION carry the loss (an SFT
  batch: long prompt, short answer);
- the same adapter: rank 16, alpha 32, no dropout, all seven projections, with PEFT's lora_A
  overwritten by ours, so the two runs should report the same losses step for step;
- AdamW (no weight decay) and gradient clipping at 1.0;
- activation checkpointing on or off for both (`--grad-checkpoint`; by default as the trainer
  runs: on for CUDA, off on CPU; transformers through gradient_checkpointing_enable);
- torch.compile on or off for both (`--compile`: ours as the trainer's --compile does it, theirs
  torch.compile of the peft model); the warmup steps pay for compiling, and the first step's time
  is reported apart.
Time is counted after --warmup steps; tokens/s is real tokens per second of the median step.
Beside it, the useful GFLOPS of that step (trainer.qwen3.flops counts them from the shapes) and, in
the same run, this machine's matmul peak in the same dtype, so every figure has a share of the
machine's own limit.
"""

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click
import torch
from torch import Tensor

from make_random_checkpoint import SHAPES, make_random_checkpoint, random_tensor
from measure import DTYPES, PEAK_SIZE, matmul_peak_gflops, peak_memory, require_device, synchronize
from trainer.cli import DTYPE_CHOICES, DTYPE_HELP, user_errors_as_messages
from trainer.errors import TrainerError
from trainer.job.loading import dtype_line, resolve_dtype
from trainer.qwen3.config import Qwen3Config, config_to_json
from trainer.qwen3.flops import lora_step_flops
from trainer.qwen3.lora import ALL_PROJECTIONS, LoraSettings, init_lora
from trainer.qwen3.model import Weights
from trainer.qwen3.quant import quant_transform
from trainer.qwen3.weights import expected_shapes, load_weights
from trainer.text.data import IGNORE_INDEX, Batch, Example, collate
from trainer.training.loss import default_ce_chunk
from trainer.training.train import LoopSettings, lora_batch_loss, make_optimizer, move_batch, train_step

ANSWER_FRACTION = 0.12  # share of each row that is answer (carries the loss)
LORA = LoraSettings(r=16, alpha=32.0, dropout=0.0, targets=ALL_PROJECTIONS)
LR = 1e-4
GRAD_CLIP = 1.0
PAD_ID = 151643  # <|endoftext|>; unused, every row is full length
STACKS = ("ours", "reference")


@dataclass(frozen=True)
class BenchSettings:
    shape: str  # preset: tiny, 0.6b, 4b
    steps: int  # timed optimizer steps
    warmup: int  # untimed steps first (allocator, lazy init, autotuning)
    batch_size: int  # rows per step
    seq_len: int  # tokens per row
    device: str  # cpu or cuda
    dtype: str  # compute dtype of the frozen weights
    quant: str  # none or nf4 (4-bit frozen projections)
    grad_checkpoint: bool  # recompute each layer in backward (both stacks)
    compile: bool  # torch.compile: ours the micro-batch forward (--compile), theirs the model
    seed: int  # weights, rows and LoRA A
    checkpoint: str | None  # folder both stacks load from; None = build weights in memory


# ---------------------------------------------------------------------------
# The shared rows
# ---------------------------------------------------------------------------


def synthetic_rows(config: Qwen3Config, settings: BenchSettings) -> tuple[Tensor, Tensor]:
    """(ids [B, T] random tokens, is_answer [B, T] bool: True on the last ANSWER_FRACTION of each row)."""
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.batch_size, settings.seq_len)
    ids = torch.randint(0, config.vocab_size, shape, generator=generator)
    answer_len = max(1, round(settings.seq_len * ANSWER_FRACTION))
    is_answer = torch.zeros(shape, dtype=torch.bool)
    is_answer[:, -answer_len:] = True
    return ids, is_answer


def our_batch(ids: Tensor, is_answer: Tensor) -> Batch:
    """Our layout: labels[t] is the token at t + 1 when that token is answer; the last position has none."""
    targets = torch.where(is_answer[:, 1:], ids[:, 1:], IGNORE_INDEX)  # [B, T - 1]
    labels = torch.cat([targets, torch.full_like(ids[:, :1], IGNORE_INDEX)], dim=1)  # [B, T]
    return collate([Example(tuple(row.tolist()), tuple(lab.tolist())) for row, lab in zip(ids, labels)], PAD_ID)


def reference_labels(ids: Tensor, is_answer: Tensor) -> Tensor:
    """transformers' layout: unshifted labels (it shifts inside the loss), -100 on the prompt."""
    return torch.where(is_answer, ids, IGNORE_INDEX)  # [B, T]


# ---------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------


def timed_steps(step: Callable[[], float], settings: BenchSettings, tokens_per_step: int) -> dict:
    """Run warmup + timed steps; tokens/s uses the median timed step, so one step slowed by
    another process on a shared machine does not move the figure. The first step is reported
    apart: what a run pays once (lazy set-up, and with --compile the compilation)."""
    losses, seconds = [], []
    for _ in range(settings.warmup + settings.steps):
        synchronize(settings.device)
        started = time.perf_counter()
        losses.append(step())  # .item() inside waits for the device
        seconds.append(time.perf_counter() - started)
    step_s = statistics.median(seconds[settings.warmup:])
    memory, memory_kind = peak_memory(settings.device)
    return {"tokens_per_s": tokens_per_step / step_s, "step_s": step_s, "first_step_s": seconds[0],
            "step_s_all": seconds[settings.warmup:],
            "peak_mem_bytes": memory, "mem_kind": memory_kind, "loss_first": losses[0], "loss_last": losses[-1], "losses": losses}


# ---------------------------------------------------------------------------
# Our stack: trainer.training.train.lora_batch_loss + train_step
# ---------------------------------------------------------------------------


def our_weights(config: Qwen3Config, settings: BenchSettings) -> Weights:
    """The frozen base: read from the checkpoint, or rebuilt tensor by tensor from the seed."""
    dtype, transform = DTYPES[settings.dtype], quant_transform(settings.quant)
    if settings.checkpoint:
        return load_weights(settings.checkpoint, config, dtype, settings.device, transform)
    weights = {}
    for name, shape in expected_shapes(config).items():
        tensor = random_tensor(name, shape, settings.seed, settings.device).to(dtype)
        weights[name] = transform(name, tensor) if transform else tensor
    return weights


def run_ours(config: Qwen3Config, settings: BenchSettings) -> dict:
    weights = our_weights(config, settings)
    lora = init_lora(config, LORA, settings.seed, settings.device)
    params = list(lora.values())
    loop = LoopSettings(steps=settings.steps, batch_size=settings.batch_size, grad_accum=1, lr=LR, warmup_steps=0,
                        grad_clip=GRAD_CLIP, weight_decay=0.0, seed=settings.seed, pad_id=PAD_ID,
                        device=settings.device)
    optimizer = make_optimizer(params, loop)
    batch = move_batch(our_batch(*synthetic_rows(config, settings)), settings.device)
    batch_loss = lora_batch_loss(weights, config, lora, LORA, DTYPES[settings.dtype],
                                 default_ce_chunk(config.vocab_size), settings.grad_checkpoint,
                                 compile_step=settings.compile)
    result = timed_steps(lambda: train_step(batch_loss, params, optimizer, [batch], GRAD_CLIP).loss,
                         settings, int(batch.segment_ids.sum()))
    return result | {"trainable": sum(p.numel() for p in params)}


# ---------------------------------------------------------------------------
# The reference stack: transformers Qwen3ForCausalLM + peft, imported only here
# ---------------------------------------------------------------------------


def reference_base(config: Qwen3Config, settings: BenchSettings):
    """Qwen3ForCausalLM with our weights: from_pretrained on the checkpoint, else filled from the seed."""
    from transformers import BitsAndBytesConfig, Qwen3ForCausalLM
    from transformers import Qwen3Config as HFQwen3Config
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars would flood the benchmark's output
    dtype = DTYPES[settings.dtype]
    if settings.checkpoint:
        quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=dtype) if settings.quant == "nf4" else None)
        return Qwen3ForCausalLM.from_pretrained(settings.checkpoint, dtype=dtype, device_map=settings.device,
                                                quantization_config=quant)
    with torch.device(settings.device):
        model = Qwen3ForCausalLM._from_config(HFQwen3Config(**config_to_json(config)), dtype=dtype)
    fill_from_seed(model, config, settings.seed, settings.device)
    return model


def fill_from_seed(model: torch.nn.Module, config: Qwen3Config, seed: int, device: str) -> None:
    """Overwrite every parameter with the tensor our stack builds for the same name (tied head once)."""
    shapes = expected_shapes(config)
    params = dict(model.named_parameters())
    if set(params) != set(shapes):
        raise TrainerError(f"transformers' parameter names differ from ours: {sorted(set(params) ^ set(shapes))[:10]}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(random_tensor(name, shapes[name], seed, device))


def reference_model(config: Qwen3Config, settings: BenchSettings):
    """peft LoRA on all seven projections, lora_A copied from init_lora so both stacks start equal."""
    from peft import LoraConfig, get_peft_model

    warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a renamed transformers method
    peft_config = LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, lora_dropout=LORA.dropout,
                             target_modules=list(LORA.targets), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(reference_base(config, settings), peft_config)
    if settings.grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ours = init_lora(config, LORA, settings.seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(ours[name.replace(".default.", ".")])
    return model.train()


def run_reference(config: Qwen3Config, settings: BenchSettings) -> dict:
    model = reference_model(config, settings)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), weight_decay=0.0)
    ids, is_answer = synthetic_rows(config, settings)
    labels = reference_labels(ids, is_answer).to(settings.device)
    ids = ids.to(settings.device)
    mask = torch.ones_like(ids)

    forward = torch.compile(model) if settings.compile else model

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = forward(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        return loss.item()

    return timed_steps(step, settings, int(mask.sum())) | {"trainable": sum(p.numel() for p in params)}


# ---------------------------------------------------------------------------
# One stack per process, and the side-by-side table
# ---------------------------------------------------------------------------


def check_runnable(settings: BenchSettings) -> None:
    require_device(settings.device)
    if settings.shape == "4b" and settings.device == "cpu":
        raise TrainerError("--shape 4b trains only with --device cuda (each stack would need 16 GB of float32 "
                           "weights and minutes per step on CPU); measure loading instead: "
                           "make_random_checkpoint.py --shape 4b DIR, then bench_load.py DIR --quant nf4")


def with_checkpoint_for_nf4(settings: BenchSettings, run: Callable[[BenchSettings], list[dict]]) -> list[dict]:
    """run(settings); nf4 without --checkpoint first writes one to a temporary folder, because
    transformers quantizes only while it loads (with --stack both, both processes share it)."""
    if settings.quant != "nf4" or settings.checkpoint:
        return run(settings)
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as folder:
        make_random_checkpoint(SHAPES[settings.shape], Path(folder), settings.seed, device=settings.device)
        return run(replace(settings, checkpoint=folder))


def run_stack(stack: str, settings: BenchSettings) -> dict:
    """Measure one stack in this process."""
    config = SHAPES[settings.shape]
    runner = {"ours": run_ours, "reference": run_reference}[stack]
    result = runner(config, settings)
    flops = step_flops(config, settings)
    return {"stack": stack} | asdict(settings) | result | {"step_flops": flops,
                                                            "useful_gflops": flops / result["step_s"] / 1e9}


def step_flops(config: Qwen3Config, settings: BenchSettings) -> int:
    """The useful FLOPs of one step on the benchmark's rows (the same for both stacks)."""
    answer_tokens = int((our_batch(*synthetic_rows(config, settings)).labels != IGNORE_INDEX).sum())
    return lora_step_flops(config, settings.batch_size, settings.seq_len, answer_tokens, LORA.r, LORA.targets)


def child_args(stack: str, settings: BenchSettings) -> list[str]:
    args = ["--stack", stack, "--json", "--shape", settings.shape, "--steps", str(settings.steps),
            "--warmup", str(settings.warmup), "--batch-size", str(settings.batch_size),
            "--seq-len", str(settings.seq_len), "--device", settings.device, "--dtype", settings.dtype,
            "--quant", settings.quant, "--seed", str(settings.seed),
            "--grad-checkpoint" if settings.grad_checkpoint else "--no-grad-checkpoint",
            "--compile" if settings.compile else "--no-compile"]
    return args + (["--checkpoint", settings.checkpoint] if settings.checkpoint else [])


def run_child(stack: str, settings: BenchSettings) -> dict:
    """This script with --stack STACK --json in a fresh process; its last stdout line is the result."""
    done = subprocess.run([sys.executable, __file__, *child_args(stack, settings)], stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise TrainerError(f"the {stack} run failed (exit {done.returncode}); its errors are printed above")
    return json.loads(lines[-1])


def run_both(settings: BenchSettings) -> list[dict]:
    """Both stacks, one process each."""
    return [run_child(stack, settings) for stack in STACKS]


def ratios(rows: list[dict]) -> dict:
    """ours / reference for speed and memory (above 1 is faster; below 1 is leaner)."""
    ours, reference = (next(r for r in rows if r["stack"] == s) for s in STACKS)
    return {"tokens_per_s": ours["tokens_per_s"] / reference["tokens_per_s"],
            "peak_mem": ours["peak_mem_bytes"] / reference["peak_mem_bytes"]}


def table(rows: list[dict], peak_gflops: float) -> str:
    first = rows[0]
    lines = [f"{first['shape']} on {first['device']}, {first['dtype']}, quant {first['quant']}, LoRA r{LORA.r} "
             f"on {len(LORA.targets)} projections, batch {first['batch_size']} x {first['seq_len']}, "
             f"activation checkpointing {'on' if first['grad_checkpoint'] else 'off'}, "
             f"torch.compile {'on' if first['compile'] else 'off'}, "
             f"{first['steps']} timed steps after {first['warmup']} warmup",
             f"useful work {first['step_flops'] / 1e9:.1f} GFLOP a step (trainer/qwen3/flops.py); this machine's "
             f"{first['dtype']} matmul peak now: {peak_gflops:.0f} GFLOPS ({PEAK_SIZE}x{PEAK_SIZE})",
             f"{'stack':<12}{'tokens/s':>12}{'step s':>10}{'1st step s':>12}{'GFLOPS':>10}{'of peak':>9}  "
             f"{first['mem_kind'] + ' GB':>24}{'loss first':>12}{'loss last':>12}"]
    for r in rows:
        lines.append(f"{r['stack']:<12}{r['tokens_per_s']:>12.1f}{r['step_s']:>10.3f}{r['first_step_s']:>12.3f}"
                     f"{r['useful_gflops']:>10.1f}"
                     f"{r['useful_gflops'] / peak_gflops:>9.0%}  "
                     f"{r['peak_mem_bytes'] / 1e9:>24.3f}{r['loss_first']:>12.5f}{r['loss_last']:>12.5f}")
    if len(rows) == 2:
        ratio = ratios(rows)
        lines.append(f"{'ours/ref':<12}{ratio['tokens_per_s']:>11.2f}x{'':>31}  {ratio['peak_mem']:>23.2f}x")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def finite_or_fail(rows: list[dict]) -> None:
    """A benchmark whose loss blew up measured nothing useful: say so instead of printing a table."""
    for r in rows:
        if not all(math.isfinite(r[key]) for key in ("tokens_per_s", "loss_first", "loss_last")):
            raise TrainerError(f"the {r['stack']} run produced non-finite numbers: {r}")


@click.command(context_settings={"show_default": True})
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="tiny", help="Qwen3 preset to build at random.")
@click.option("--stack", type=click.Choice([*STACKS, "both"]), default="both",
              help="ours, reference (transformers + peft), or both, each in its own process.")
@click.option("--steps", type=click.IntRange(min=1), default=5, help="Timed optimizer steps.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, help="Untimed steps before timing starts.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, help="Rows per step.")
@click.option("--seq-len", type=click.IntRange(min=2), default=256,
              help="Tokens per row; the last 12% are the answer.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="Where both stacks run.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto", help=DTYPE_HELP)
@click.option("--quant", type=click.Choice(["none", "nf4"]), default="none",
              help="nf4: 4-bit frozen projections (ours: trainer.qwen3.quant; reference: BitsAndBytesConfig).")
@click.option("--grad-checkpoint/--no-grad-checkpoint", default=None,
              help="Recompute each layer during backward, in both stacks [default: on for CUDA, off on CPU].")
@click.option("--compile/--no-compile", default=False,
              help="torch.compile in both stacks (ours: the trainer's --compile); the warmup steps pay for it.")
@click.option("--seed", default=0, help="Seed of the weights, the rows and LoRA A.")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="Both stacks load this folder (made by make_random_checkpoint.py --shape SHAPE) "
                   "instead of building weights in memory; nf4 without it writes a temporary one.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of the table.")
@user_errors_as_messages
def main(stack: str, as_json: bool, **options) -> None:
    options["dtype"], why = resolve_dtype(options["dtype"], options["device"])
    if options["grad_checkpoint"] is None:
        options["grad_checkpoint"] = options["device"] == "cuda"  # as the trainer does
    settings = BenchSettings(**options)
    check_runnable(settings)
    if not as_json:
        click.echo(dtype_line(settings.dtype, why), err=True)
    rows = with_checkpoint_for_nf4(settings, run_both if stack == "both" else lambda s: [run_stack(stack, s)])
    finite_or_fail(rows)
    if as_json:
        click.echo(json.dumps(rows[0] if len(rows) == 1 else {"rows": rows, "ratios": ratios(rows)}))
    else:
        click.echo(table(rows, matmul_peak_gflops(DTYPES[settings.dtype], settings.device)))


if __name__ == "__main__":
    main()
