"""Talk to a Qwen3: a base model, a base + LoRA adapter, or a merged export.

    python scripts/chat.py --model tiny --prompt 你是誰 --greedy
    python scripts/chat.py --model weights/whoami-tiny/merged --prompt 你是誰
    python scripts/chat.py --model tiny --adapter weights/whoami-tiny/adapter     # interactive

With --prompt it prints one reply; without it, it keeps a conversation going, printing each
reply token by token (/reset forgets the conversation, /exit quits).
"""

import click

from ..cli import (AT_LEAST_ONE, DTYPE_CHOICES, DTYPE_HELP, POSITIVE, SHARE, ZERO_OR_MORE, chosen_dtype,
                   user_errors_as_messages)
from ..job.loading import LoadedModel, load_inference_adapter, load_model, resolve_device
from ..qwen3.generate import stream_tokens
from ..qwen3.model import LoraAdapter


def reply_stream(model: LoadedModel, messages: list[dict], adapter: LoraAdapter | None, sampling: dict):
    """Yield the reply's text piece by piece (decoding the growing id list keeps multi-byte characters whole)."""
    prompt_ids = model.tokenizer.encode(model.chat.prompt(messages))  # in the model's own format
    stop = [model.tokenizer.im_end_id, model.tokenizer.endoftext_id]
    ids, shown = [], ""
    for token in stream_tokens(model.weights, model.config, prompt_ids, stop_ids=stop, lora=adapter, **sampling):
        ids.append(token)
        text = model.tokenizer.decode(ids)
        if not text.endswith("\ufffd"):  # wait until a split character is complete
            yield text[len(shown):]
            shown = text
    yield model.tokenizer.decode(ids)[len(shown):]


def interactive(model: LoadedModel, adapter: LoraAdapter | None, sampling: dict) -> None:
    """A conversation loop that keeps the history; /reset and /exit."""
    click.echo("Chat with the model. /reset forgets the conversation, /exit quits.")
    messages: list[dict] = []
    while True:
        try:
            line = click.prompt("you", prompt_suffix="> ")
        except (EOFError, click.Abort):
            return
        if line.strip() == "/exit":
            return
        if line.strip() == "/reset":
            messages = []
            click.echo("(conversation reset)")
            continue
        messages.append({"role": "user", "content": line})
        click.echo("model> ", nl=False)
        reply = "".join(click.echo(piece, nl=False) or piece for piece in reply_stream(model, messages, adapter, sampling))
        click.echo()
        messages.append({"role": "assistant", "content": reply})


@click.command(context_settings={"show_default": True})
@click.option("--model", "model_name", default="tiny", help="Model folder (base or OUT/merged), hub id, or `tiny`.")
@click.option("--adapter", default=None, help="A PEFT LoRA adapter folder (OUT/adapter) to apply on top of --model.")
@click.option("--prompt", default=None, help="Ask one question and print the reply; without it, chat interactively.")
@click.option("--max-new-tokens", type=AT_LEAST_ONE, default=256, help="Stop after this many new tokens.")
@click.option("--greedy/--sample", default=True, help="Always take the most likely token, or sample.")
@click.option("--temperature", type=POSITIVE, default=0.7, help="Sampling temperature (with --sample).")
@click.option("--top-k", type=ZERO_OR_MORE, default=20, help="Sample among the k most likely tokens (0 = all).")
@click.option("--top-p", type=SHARE, default=0.8, help="Sample among the fewest tokens holding this probability.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible sampling.")
@click.option("--quant", type=click.Choice(["none", "nf4"]), default="none", help="Load the linears as 4-bit NF4.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto", help=DTYPE_HELP)
@click.option("--device", default="cpu", help="cpu or cuda.")
@user_errors_as_messages
def main(model_name, adapter, prompt, max_new_tokens, greedy, temperature, top_k, top_p, seed, quant, dtype, device):
    device = resolve_device(device)
    dtype = chosen_dtype(dtype, device)
    model = load_model(model_name, dtype, device, quant)
    lora = load_inference_adapter(adapter, model.config, dtype, device) if adapter else None
    sampling = {"max_new_tokens": max_new_tokens, "greedy": greedy, "temperature": temperature,
                "top_k": top_k, "top_p": top_p, "seed": seed}
    if prompt is None:
        interactive(model, lora, sampling)
        return
    click.echo("".join(reply_stream(model, [{"role": "user", "content": prompt}], lora, sampling)))


if __name__ == "__main__":
    main()
