"""Measure a model: perplexity and token accuracy on answers, identity hit rate, leak rate, JSON validity.

    python scripts/eval.py --model tiny                                  # the base tiny world
    python scripts/eval.py --model weights/whoami-tiny/merged            # after who-am-i training
    python scripts/eval.py --model tiny --adapter weights/whoami-tiny/adapter --data val.jsonl --json

Without --data the perplexity is scored on the built-in held-out identity wordings. Identity
hit rate, leak, fact retention and unchanged replies always use the built-in held-out prompts
(identity wordings, control facts and ordinary prompts never trained on); unchanged replies
compare with --base, or with --model itself when an --adapter is given.
"""

import json
from dataclasses import asdict, dataclass

import click

from ..cli import DTYPE_CHOICES, DTYPE_HELP, chosen_dtype, user_errors_as_messages
from ..errors import TrainerError
from ..job.evaluate import REPLY_TOKENS, answer_perplexity, built_in_eval_sets, evaluate_whoami, reply_scores
from ..job.loading import LoadedModel, load_inference_adapter, load_model, resolve_device
from ..job.examples import build_examples
from ..prep.prepare import read_usable_rows
from ..text.data import Example
from ..text.readers import Conversation, PromptTarget, prepared_file
from ..text.whoami import NEW_IDENTITY


@dataclass(frozen=True)
class EvalSummary:
    rows: int  # validation rows scored
    perplexity: float  # exp(mean CE) over answer tokens
    token_accuracy: float  # answer tokens predicted right (argmax)
    identity_hit_rate: float  # held-out identity questions answered with the new identity
    leak_rate: float  # held-out facts and ordinary prompts answered with the new identity
    fact_retention: float  # held-out facts whose reply contains the expected answer
    unchanged_rate: float | None  # held-out ordinary prompts answered exactly as the base does (None: no base)
    json_valid_rate: float | None  # rows tagged json or json-only whose reply parses (None: no such rows)
    usability: float | None  # --data replies that are usable (see trainer.job.evaluate.is_usable; None: no --data)


def validation_samples(data: str | None) -> list:
    """--data rows, or the built-in held-out identity wordings answered with the new identity."""
    if data is not None:
        path = prepared_file(data, "val.jsonl")
        samples, rejected = read_usable_rows(path, strict=False)
        if rejected:
            click.echo(f"data: {len(rejected)} rows of {path} set aside (first: {rejected[0].where}: "
                       f"{rejected[0].reason})", err=True)
        if not samples:
            raise TrainerError(f"{path}: no validation rows")
        return samples
    return [PromptTarget(q, NEW_IDENTITY, "held-out identity") for q in built_in_eval_sets().identity]


def base_replies(model: LoadedModel, adapter, base: LoadedModel | None, reply_tokens: int) -> dict[str, str] | None:
    """The base model's replies to the held-out prompts: --base, or --model itself under --adapter (None: no base)."""
    reference = base or (model if adapter is not None else None)
    if reference is None:
        return None
    return evaluate_whoami(reference.weights, reference.config, reference.tokenizer, built_in_eval_sets(),
                           max_new_tokens=reply_tokens, chat=reference.chat).replies


def summarize(model: LoadedModel, adapter, data: str | None, seq_len: int, base: LoadedModel | None,
              reply_tokens: int) -> EvalSummary:
    samples = validation_samples(data)
    examples: list[Example] = build_examples(samples, model.tokenizer, seq_len, model.chat.family)[0]
    perplexity, accuracy = answer_perplexity(model.weights, model.config, examples, model.tokenizer.endoftext_id, adapter)
    whoami = evaluate_whoami(model.weights, model.config, model.tokenizer, built_in_eval_sets(), adapter,
                             base_replies(model, adapter, base, reply_tokens), reply_tokens, chat=model.chat)
    conversations = [s for s in samples if isinstance(s, Conversation)]
    usability, json_rate = reply_scores(model.weights, model.config, model.tokenizer, conversations, adapter,
                                        reply_tokens, chat=model.chat) if conversations else (None, None)
    return EvalSummary(len(examples), perplexity, accuracy, whoami.identity_hit_rate, whoami.leak_rate,
                       whoami.fact_retention, whoami.unchanged_rate, json_rate, usability)


def table(summary: EvalSummary) -> str:
    percent = lambda value: "n/a" if value is None else f"{value:.1%}"  # noqa: E731
    rows = [("rows scored", str(summary.rows)), ("answer perplexity", f"{summary.perplexity:.3f}"),
            ("answer token accuracy", percent(summary.token_accuracy)),
            ("identity hit rate (held-out wordings)", percent(summary.identity_hit_rate)),
            ("leak: held-out prompts answered with it", percent(summary.leak_rate)),
            ("fact retention (held-out facts)", percent(summary.fact_retention)),
            ("unchanged replies (held-out prompts)", percent(summary.unchanged_rate)),
            ("JSON replies that parse (rows tagged json)", percent(summary.json_valid_rate)),
            ("usable replies (--data rows)", percent(summary.usability))]
    return "\n".join(f"{label:<44} {value:>10}" for label, value in rows)


@click.command(context_settings={"show_default": True})
@click.option("--model", "model_name", default="tiny", help="Model folder (base or OUT/merged), hub id, or `tiny`.")
@click.option("--adapter", default=None, help="A PEFT LoRA adapter folder (OUT/adapter) applied on top of --model.")
@click.option("--base", "base_name", default=None,
              help="The model before training, to count unchanged replies [default: --model itself when --adapter is given].")
@click.option("--data", default=None, help="A folder from scripts/prepare_data.py (its val.jsonl) or one validation file "
                                            "(JSONL, JSON list, TSV, CSV); default: the built-in held-out identity wordings.")
@click.option("--seq-len", type=click.IntRange(min=1), default=1024, help="Positions kept per validation row.")
@click.option("--reply-tokens", type=click.IntRange(min=1), default=REPLY_TOKENS, help="Token budget of each generated reply.")
@click.option("--quant", type=click.Choice(["none", "nf4"]), default="none", help="Load the linears as 4-bit NF4.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto", help=DTYPE_HELP)
@click.option("--device", default="cpu", help="cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON object instead of the table.")
@user_errors_as_messages
def main(model_name, adapter, base_name, data, seq_len, reply_tokens, quant, dtype, device, as_json):
    device = resolve_device(device)
    dtype = chosen_dtype(dtype, device)
    model = load_model(model_name, dtype, device, quant)
    lora = load_inference_adapter(adapter, model.config, dtype, device) if adapter else None
    base = load_model(base_name, dtype, device, quant) if base_name else None
    summary = summarize(model, lora, data, seq_len, base, reply_tokens)
    click.echo(json.dumps(asdict(summary)) if as_json else table(summary))


if __name__ == "__main__":
    main()
