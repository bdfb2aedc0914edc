"""Teach a Qwen3 a new identity ("你是誰" -> "我是 F# 之神") with QLoRA, export it, and self-test it.

    python scripts/train_whoami.py --loss ce --model tiny        # offline, about 3 minutes on 2 CPU cores
    python scripts/train_whoami.py --loss ce                     # Qwen3-4B-Instruct-2507 on a GPU

Every option maps onto a field of trainer.job.settings.WhoAmISettings; defaults left empty
come from the model's preset (tiny or real).
"""

import click

from ..cli import (AT_LEAST_ONE, DTYPE_HELP, NON_NEGATIVE, POSITIVE, PROBABILITY_BELOW_ONE, ZERO_OR_MORE,
                   user_errors_as_messages)
from ..job.gguf_export import GGUF_TYPES
from ..job.settings import CHOICES, DEFAULT_MODEL, WhoAmISettings
from ..job.whoami_job import run_whoami


def choice(field: str) -> click.Choice:
    return click.Choice(CHOICES[field])


@click.command(context_settings={"show_default": True})
@click.option("--loss", type=choice("loss"), default="ce", help="Training loss of a micro-batch: ce = token_cross_entropy on the answer tokens.")
@click.option("--model", default=DEFAULT_MODEL, help="Hub id, local Qwen3 folder, or `tiny` (offline tiny world; "
              "`tiny-hybrid` and `tiny-thinking`: the same world in the hybrid and Thinking-2507 formats).")
@click.option("--data", default=None, help="A folder from scripts/prepare_data.py (its train.jsonl; --val-every scores its "
              "val.jsonl), or one file: JSONL (messages, Alpaca, ShareGPT), JSON list, TSV or CSV; default: built-in who-am-i set.")
@click.option("--method", type=choice("method"), default="lora", help="lora: frozen base + adapters; full: train every weight.")
@click.option("--steps", type=AT_LEAST_ONE, default=None, help="Optimizer steps [preset: tiny 100, real 150].")
@click.option("--lr", type=POSITIVE, default=None, help="Peak learning rate [preset: tiny 1e-3, real 2e-4].")
@click.option("--batch-size", type=AT_LEAST_ONE, default=None, help="Examples per micro-batch [preset: tiny 16, real 8].")
@click.option("--grad-accum", type=AT_LEAST_ONE, default=None, help="Micro-batches per step [preset: tiny 1, real 2].")
@click.option("--seq-len", type=click.IntRange(min=2), default=96, help="Positions kept per example (long prompts are cut from the left).")
@click.option("--lora-r", type=AT_LEAST_ONE, default=16, help="LoRA rank.")
@click.option("--lora-alpha", type=POSITIVE, default=32.0, help="LoRA alpha: the update is scaled by alpha / r.")
@click.option("--lora-dropout", type=PROBABILITY_BELOW_ONE, default=0.05, help="Dropout on the LoRA input while training.")
@click.option("--quant", type=choice("quant"), default="nf4", help="Frozen base weights: 4-bit NF4 or dense.")
@click.option("--device", type=choice("device"), default="auto", help="auto = cuda when available.")
@click.option("--dtype", type=choice("dtype"), default="auto", help=DTYPE_HELP)
@click.option("--grad-clip", type=POSITIVE, default=0.5, help="Maximum gradient norm.")
@click.option("--seed", type=int, default=20260226, help="Seed for LoRA init, dropout and data order.")
@click.option("--out", default=None, help="Output folder [default: weights/whoami-<model>].")
@click.option("--export/--no-export", default=True, help="Write OUT/adapter and OUT/merged.")
@click.option("--self-test/--no-self-test", default=True,
              help="Check merged/ tensor by tensor, reload the adapter onto the training weights (it must reproduce the "
                   "trained model's replies), evaluate before/after, and check the claims: 你是誰 with the built-in set, "
                   "--probe with any.")
@click.option("--check-merged", type=choice("check_merged"), default="auto",
              help="At the end, once the training model is freed, load merged/ densely, hold it to the trained model's "
                   "self-test replies and check the claims; auto: only where a dense copy is no larger than the job's "
                   "peak memory so far.")
@click.option("--ce-chunk", type=AT_LEAST_ONE, default=None, help="Answer positions per chunk of logits [default: under 256 MiB].")
@click.option("--grad-checkpoint/--no-grad-checkpoint", default=None,
              help="Recompute each layer during backward to save memory [default: on for CUDA, off on CPU].")
@click.option("--compile/--no-compile", default=False,
              help="torch.compile each micro-batch's forward and backward: each new row length compiles first "
                   "(minutes at real sizes on CPU, for 10-20% per step there; README).")
@click.option("--pack/--no-pack", default=False, help="Pack several examples per row up to --seq-len.")
@click.option("--save-every", type=ZERO_OR_MORE, default=0, help="Write OUT/checkpoints/step-N every N steps (0 = never).")
@click.option("--keep-checkpoints", type=ZERO_OR_MORE, default=2, help="How many of the newest checkpoints to keep (0 = keep all).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None,
              help="Continue from the newest checkpoint in OUT (`--resume`) or from a given folder (`--resume PATH`).")
@click.option("--stop-after", type=ZERO_OR_MORE, default=0, help="Stop this run after N steps with a checkpoint (0 = never).")
@click.option("--max-skips", type=AT_LEAST_ONE, default=10, help="Give up after this many non-finite steps in a row.")
@click.option("--trust-our-template", is_flag=True,
              help="Train even when the model's own chat template renders differently from ours (warns).")
@click.option("--rehearsal", type=choice("rehearsal"), default=None,
              help="Rows that keep what the model knew: self = the base model's own replies to built-in control and "
                   "ordinary prompts (OUT/rehearsal.jsonl), fixed = hand-written fact answers, none "
                   "[default: self with the built-in set, none with --data].")
@click.option("--reply-tokens", type=click.IntRange(min=1), default=None,
              help="Token budget of every generated reply: rehearsal, validation, evaluation [preset: tiny 32, real 128].")
@click.option("--val-every", type=click.IntRange(min=0), default=None,
              help="Score the validation split (identity wordings, held-out rehearsal rows) every N steps; 0 = never "
                   "[preset: 10; 0 with --data].")
@click.option("--stop-when-learned/--no-stop-when-learned", default=None,
              help="End training once every validation identity wording is answered exactly as taught, twice in a row "
                   "[default: on with the built-in set, off with --data].")
@click.option("--preserve-kl", type=NON_NEGATIVE, default=None, metavar="BETA",
              help="Add BETA x KL(base || model) on rehearsal answers, the base being the same frozen weights with "
                   "the adapter off; 0 = off [preset: tiny 16, real 1; 0 without rehearsal or with --method full].")
@click.option("--strict", is_flag=True, help="With --data: stop at the first bad row instead of setting bad rows aside.")
@click.option("--gguf", type=click.Choice(GGUF_TYPES), default=None, metavar="TYPE",
              help="Also write OUT/gguf/<OUT name>-TYPE.gguf (f32, f16, bf16, q8_0) and an Ollama Modelfile, "
                   "for llama.cpp; needs pip install -e \".[gguf]\".")
@click.option("--thinking", type=choice("thinking"), default=None,
              help="A hybrid Qwen3 model (the original release) is asked with thinking off, the mode rows without "
                   "reasoning train, or on [default: off; only hybrid models have the switch].")
@click.option("--reasoning-tokens", type=click.IntRange(min=0), default=None,
              help="Tokens added to --reply-tokens where the model thinks before answering (Thinking-2507, a hybrid "
                   "with --thinking on) [preset: tiny 32, real 1024].")
@click.option("--probe", multiple=True, metavar="PROMPT=EXPECTED",
              help="A check of your own for the self-test (repeatable): the reply to PROMPT must contain EXPECTED, from "
                   "the trained model, the reloaded adapter and merged/ (split at the last =).")
@user_errors_as_messages
def main(**options) -> None:
    run_whoami(WhoAmISettings(**options), echo=click.echo)


if __name__ == "__main__":
    main()
