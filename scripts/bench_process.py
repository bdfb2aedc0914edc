"""The whole training process as a user times it: ours against transformers + peft.

    python scripts/bench_process.py                          # 0.6b, float32 and bfloat16: about 10 minutes
    python scripts/bench_process.py --dtype bfloat16 --steps 2 --json out.json

bench.py times one step in isolation. A user waits for the whole process: Python and its imports,
reading the tokenizer and the data, rendering the chats and masking the prompts, loading the model,
and every step, the first included. This writes once, outside every timing, a random Qwen3
checkpoint of --shape (the Qwen3 tokenizer and the 2507 chat template beside it) and a JSONL file
of --rows chats of about --tokens tokens each. Then each stack runs as a process of its own,
timed from outside: wall clock from its start to its exit, and its peak RSS as the kernel counts
it for that child.

- ours: read_samples -> build_examples (render, make_next_token_pairs, slice_response_only) ->
  load_weights -> init_lora -> collate -> train_step, step after step
- reference: json -> AutoTokenizer.apply_chat_template -> labels masked to the assistant turn ->
  Qwen3ForCausalLM.from_pretrained -> peft get_peft_model -> the loop below

Both train --steps steps of --batch-size rows, the file's first rows in order, each step padded
to its longest row; LoRA r16 (alpha 32, no dropout) on all seven projections, AdamW at 1e-4
without weight decay, gradients clipped at 1.0. Each child also reports when each of its phases
ended, so the table says where the seconds went.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("ours", "reference")
# bench.py's settings and trainer.qwen3.lora.ALL_PROJECTIONS, written out: importing them would put our
# modules (and torch) into the reference process's measured imports
LR, GRAD_CLIP, RANK, ALPHA = 1e-4, 1.0, 16, 32.0
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ANSWER_SHARE = 0.12  # of each chat's words: a long prompt, a short answer, as in bench.py
WORDS = ("the river data table window light engine record number garden market signal morning paper "
         "question answer system letter stone music bridge winter summer orange silver travel report "
         "simple quiet careful bright heavy early local public open final clear ready small large "
         "read write build carry follow measure travel check count move join keep show").split()


# ---------------------------------------------------------------------------
# What both stacks are given (written once, untimed)
# ---------------------------------------------------------------------------


def chat_rows(rows: int, words: int, seed: int) -> list[dict]:
    """`rows` chats of `words` words (about as many tokens), the last ANSWER_SHARE of them the answer."""
    rng = random.Random(seed)
    answer = max(1, round(words * ANSWER_SHARE))

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    return [{"messages": [{"role": "user", "content": text(words - answer)},
                          {"role": "assistant", "content": text(answer)}]} for _ in range(rows)]


def write_inputs(folder: Path, shape: str, rows: int, tokens: int, seed: int) -> tuple[Path, Path]:
    """(checkpoint folder, data file) under `folder`; the checkpoint is reused when it is there."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_job import prepare_checkpoint

    checkpoint = prepare_checkpoint(shape, folder / f"qwen3-{shape}-random")
    data = folder / "chats.jsonl"
    # the chat template adds about 10 tokens around the words
    data.write_text("".join(json.dumps(row) + "\n" for row in chat_rows(rows, tokens - 10, seed)), encoding="utf-8")
    return checkpoint, data


# ---------------------------------------------------------------------------
# The two children: each returns its phase marks (seconds since it started) and losses
# ---------------------------------------------------------------------------


def ours(checkpoint: Path, data: Path, dtype_name: str, steps: int, batch_size: int, marks: dict) -> dict:
    import torch

    from trainer.job.examples import build_examples
    from trainer.qwen3.config import load_config
    from trainer.qwen3.lora import LoraSettings, init_lora
    from trainer.qwen3.weights import load_weights
    from trainer.text.data import collate
    from trainer.text.readers import read_samples
    from trainer.text.tokenizer import load_tokenizer
    from trainer.training.train import (
        LoopSettings,
        lora_batch_loss,
        make_optimizer,
        train_step,
    )

    marks["imports"] = now()
    tokenizer = load_tokenizer(checkpoint)
    examples, _ = build_examples(read_samples(data), tokenizer, seq_len=4096)
    marks["data"] = now()
    config, dtype = load_config(checkpoint), getattr(torch, dtype_name)
    weights = load_weights(checkpoint, config, dtype, "cpu")
    settings = LoraSettings(r=RANK, alpha=ALPHA, dropout=0.0, targets=PROJECTIONS)
    lora = init_lora(config, settings, seed=0)
    params = list(lora.values())
    optimizer = make_optimizer(params, LoopSettings(steps=steps, batch_size=batch_size, grad_accum=1, lr=LR,
                                                    warmup_steps=0, grad_clip=GRAD_CLIP, weight_decay=0.0, seed=0,
                                                    pad_id=tokenizer.endoftext_id))
    batch_loss = lora_batch_loss(weights, config, lora, settings, dtype)
    marks["load"] = now()
    losses, tokens = [], 0
    for step in range(steps):
        batch = collate(examples[step * batch_size:(step + 1) * batch_size], tokenizer.endoftext_id)
        result = train_step(batch_loss, params, optimizer, [batch], GRAD_CLIP)
        losses.append(result.loss)
        tokens += result.tokens
        marks[f"step {step + 1}"] = now()
    return {"losses": losses, "tokens": tokens}


def reference(checkpoint: Path, data: Path, dtype_name: str, steps: int, batch_size: int, marks: dict) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen3ForCausalLM
    from transformers.utils import logging as transformers_logging

    marks["imports"] = now()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a renamed transformers method
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = []
    for line in data.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        ids = ids[:ids.index(tokenizer.eos_token_id, -3) + 1]  # end at <|im_end|>, as ours does (not the "\n")
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                               return_dict=True)["input_ids"]
        rows.append((ids, [-100] * len(prompt) + ids[len(prompt):]))
    marks["data"] = now()
    model = Qwen3ForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype_name))
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                                             target_modules=list(PROJECTIONS), task_type="CAUSAL_LM")).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    marks["load"] = now()
    losses, tokens = [], 0
    for step in range(steps):
        chunk = rows[step * batch_size:(step + 1) * batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in chunk])
        labels = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in chunk])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row, _ in chunk])
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        losses.append(loss.item())
        tokens += int(mask.sum())
        marks[f"step {step + 1}"] = now()
    return {"losses": losses, "tokens": tokens}


STARTED = time.perf_counter()


def now() -> float:
    """Seconds since this process's module was first run (the interpreter's own start-up is not in it)."""
    return time.perf_counter() - STARTED


# ---------------------------------------------------------------------------
# Running a child from outside, and the table
# ---------------------------------------------------------------------------


def run_child(stack: str, checkpoint: Path, data: Path, dtype: str, steps: int, batch_size: int) -> dict:
    """The child's own report, plus its wall seconds and peak RSS as measured from here."""
    command = [sys.executable, __file__, "--child", stack, "--checkpoint", str(checkpoint), "--data", str(data),
               "--dtype", dtype, "--steps", str(steps), "--batch-size", str(batch_size)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = output.strip().splitlines()
    if child.returncode != 0 or not lines:
        raise click.ClickException(f"the {stack} process failed (exit {child.returncode}); its errors are above")
    return json.loads(lines[-1]) | {"wall_s": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024}


def phases(result: dict) -> dict[str, float]:
    """Seconds in each phase: start-up (interpreter, up to this module), imports, data, load, first
    step, the later steps together."""
    marks, steps = result["marks"], result["steps"]
    start_up = result["wall_s"] - marks[f"step {steps}"]
    parts = {"start-up": start_up, "imports": marks["imports"], "data": marks["data"] - marks["imports"],
             "load": marks["load"] - marks["data"], "first step": marks["step 1"] - marks["load"]}
    return parts | {"later steps": marks[f"step {steps}"] - marks["step 1"]}


def table(dtype: str, rows: dict[str, dict], peak_gflops: float) -> list[str]:
    first = rows["ours"]
    names = list(phases(first))
    lines = [f"{dtype}: {first['steps']} steps x {first['batch_size']} rows, {first['tokens']} tokens in all; "
             f"this machine's {dtype} matmul peak now: {peak_gflops:.0f} GFLOPS",
             "| stack | whole process | " + " | ".join(names) + " | peak RSS |",
             "|---" * (len(names) + 3) + "|"]
    for stack, r in rows.items():
        cells = " | ".join(f"{seconds:.1f} s" for seconds in phases(r).values())
        lines.append(f"| {stack} | {r['wall_s']:.1f} s | {cells} | {r['peak_rss_bytes'] / 1e9:.2f} GB |")
    ours_row, ref = rows["ours"], rows["reference"]
    lines.append(f"speed ours/reference {ref['wall_s'] / ours_row['wall_s']:.2f}x, "
                 f"peak RSS {ours_row['peak_rss_bytes'] / ref['peak_rss_bytes']:.2f}x; "
                 f"losses ours {fmt(ours_row['losses'])}, reference {fmt(ref['losses'])}")
    return lines


def fmt(losses: list[float]) -> str:
    return f"{losses[0]:.4f} -> {losses[-1]:.4f}"


@click.command(context_settings={"show_default": True})
@click.option("--shape", type=click.Choice(["tiny", "0.6b"]), default="0.6b", help="The random checkpoint's shape.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "both"]), default="both")
@click.option("--steps", type=click.IntRange(min=1), default=8, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, help="Rows per step.")
@click.option("--rows", type=click.IntRange(min=1), default=64, help="Chats in the data file (the first "
              "steps x batch-size are trained; both stacks prepare them all).")
@click.option("--tokens", type=click.IntRange(min=20), default=360, help="About how many tokens each chat has.")
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep (and reuse) the checkpoint and data here [default: a temporary folder].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every figure here.")
@click.option("--child", type=click.Choice(STACKS), default=None, hidden=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("--data", type=click.Path(path_type=Path), default=None, hidden=True)
def main(shape, dtype, steps, batch_size, rows, tokens, folder, json_path, child, checkpoint, data) -> None:
    if child:
        marks = {}
        trained = {"ours": ours, "reference": reference}[child](checkpoint, data, dtype, steps, batch_size, marks)
        print(json.dumps(trained | {"marks": marks, "steps": steps, "batch_size": batch_size}))
        return
    if rows < steps * batch_size:
        raise click.BadParameter(f"{rows} rows cannot fill {steps} steps of {batch_size}", param_hint="--rows")
    with tempfile.TemporaryDirectory(prefix="bench-process-") as scratch:
        checkpoint, data = write_inputs(folder or Path(scratch), shape, rows, tokens, seed=0)
        report = {}
        for name in ("float32", "bfloat16") if dtype == "both" else (dtype,):
            results = {stack: run_child(stack, checkpoint, data, name, steps, batch_size) for stack in STACKS}
            report[name] = {"stacks": results, "peak_gflops": machine_peak(name)}
            click.echo("\n".join(table(name, results, report[name]["peak_gflops"])) + "\n")
    if json_path:
        json_path.write_text(json.dumps(report, indent=1), encoding="utf-8")


def machine_peak(dtype: str) -> float:
    import torch
    from measure import matmul_peak_gflops

    return matmul_peak_gflops(getattr(torch, dtype), "cpu")


if __name__ == "__main__":
    main()
