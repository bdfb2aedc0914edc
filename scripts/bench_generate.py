"""Batched greedy generation against one prompt at a time, on the who-am-i evaluation prompts.

    python scripts/bench_generate.py --model tiny
    python scripts/bench_generate.py --model /tmp/qwen3-0.6b-random --limit 16 --reply-tokens 16

Both ways answer the same held-out prompts (identity wordings, control facts, ordinary
prompts) with the same token budget; the script checks that they produce the same tokens and
prints the seconds each took, new tokens per second and the speed-up.
"""

import json
import time

import click
import torch

from trainer.cli import user_errors_as_messages
from trainer.errors import TrainerError
from trainer.job.evaluate import built_in_eval_sets, questions_of
from trainer.job.loading import load_model
from trainer.qwen3.generate import generate, generate_greedy_batch
from trainer.text.chat import render_chat


def evaluation_prompts(limit: int | None) -> list[str]:
    questions = questions_of(built_in_eval_sets())
    return questions[:limit] if limit else questions


@click.command(context_settings={"show_default": True})
@click.option("--model", "model_name", default="tiny", help="Model folder, hub id, or `tiny`.")
@click.option("--reply-tokens", type=click.IntRange(min=1), default=32, help="Token budget of each reply.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Prompts per batch.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N prompts [default: all].")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", help="Compute dtype.")
@click.option("--device", default="cpu", help="cpu or cuda.")
@user_errors_as_messages
def main(model_name, reply_tokens, batch_size, limit, dtype, device):
    model = load_model(model_name, getattr(torch, dtype), device)
    tokenizer = model.tokenizer
    prompts = [tokenizer.encode(render_chat([{"role": "user", "content": q}], add_generation_prompt=True))
               for q in evaluation_prompts(limit)]
    stop = [tokenizer.im_end_id, tokenizer.endoftext_id]
    started = time.perf_counter()
    alone = [generate(model.weights, model.config, p, reply_tokens, stop) for p in prompts]
    alone_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = generate_greedy_batch(model.weights, model.config, prompts, reply_tokens, stop,
                                    pad_id=tokenizer.endoftext_id, batch_size=batch_size)
    batched_s = time.perf_counter() - started
    if [list(r.ids) for r in batched] != alone:
        raise TrainerError("batched replies differ from one-at-a-time replies")
    new_tokens = sum(len(ids) for ids in alone)
    click.echo(json.dumps({
        "prompts": len(prompts), "new_tokens": new_tokens, "one_at_a_time_s": round(alone_s, 3),
        "batched_s": round(batched_s, 3), "one_at_a_time_tokens_per_s": round(new_tokens / alone_s, 1),
        "batched_tokens_per_s": round(new_tokens / batched_s, 1), "speedup": round(alone_s / batched_s, 2),
        "identical": True,
    }))


if __name__ == "__main__":
    main()
