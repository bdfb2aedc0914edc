"""Measure a model: perplexity and token accuracy on answers, identity hit rate, leak rate, JSON validity.

    python scripts/eval.py --model tiny                                  # the base tiny world
    python scripts/eval.py --model weights/whoami-tiny/merged            # after who-am-i training
    python scripts/eval.py --model tiny --adapter weights/whoami-tiny/adapter --data val.jsonl --json

Without --data it scores the built-in who-am-i held-out split (identity wordings and control
facts never trained on). Identity hit rate and leak rate always use that split.
"""

import json
from dataclasses import asdict, dataclass

import click
import torch

from trainer.cli import user_errors_as_messages
from trainer.data import Example
from trainer.errors import TrainerError
from trainer.evaluate import answer_perplexity, evaluate_whoami, json_valid_rate
from trainer.loading import LoadedModel, load_inference_adapter, load_model
from trainer.readers import Conversation, PromptTarget, read_samples
from trainer.whoami import NEW_IDENTITY, evaluation_sets
from trainer.whoami_job import build_examples


@dataclass(frozen=True)
class EvalSummary:
    rows: int  # validation rows scored
    perplexity: float  # exp(mean CE) over answer tokens
    token_accuracy: float  # answer tokens predicted right (argmax)
    identity_hit_rate: float  # held-out identity questions answered with the new identity
    leak_rate: float  # control questions answered with the new identity
    control_accuracy: float  # held-out control facts answered exactly
    json_valid_rate: float | None  # rows tagged "json" whose reply parses (None: no such rows)


def validation_samples(data: str | None) -> list:
    """--data rows, or the built-in held-out split as (question, expected answer) pairs."""
    if data is not None:
        samples = read_samples(data)
        if not samples:
            raise TrainerError(f"{data}: no validation rows")
        return samples
    identity, held_out_facts, _ = evaluation_sets()
    return [PromptTarget(q, NEW_IDENTITY, "held-out identity") for q in identity] + held_out_facts


def summarize(model: LoadedModel, adapter, data: str | None, seq_len: int) -> EvalSummary:
    samples = validation_samples(data)
    examples: list[Example] = build_examples(samples, model.tokenizer, seq_len)[0]
    perplexity, accuracy = answer_perplexity(model.weights, model.config, examples, model.tokenizer.endoftext_id, adapter)
    whoami = evaluate_whoami(model.weights, model.config, model.tokenizer, *evaluation_sets(), lora=adapter)
    conversations = [s for s in samples if isinstance(s, Conversation)]
    json_rate = json_valid_rate(model.weights, model.config, model.tokenizer, conversations, adapter)
    return EvalSummary(len(examples), perplexity, accuracy, whoami.identity_hit_rate, whoami.leak_rate,
                       whoami.control_accuracy, json_rate)


def table(summary: EvalSummary) -> str:
    percent = lambda value: "n/a" if value is None else f"{value:.1%}"  # noqa: E731
    rows = [("rows scored", str(summary.rows)), ("answer perplexity", f"{summary.perplexity:.3f}"),
            ("answer token accuracy", percent(summary.token_accuracy)),
            ("identity hit rate (held-out wordings)", percent(summary.identity_hit_rate)),
            ("leak: facts answered with the identity", percent(summary.leak_rate)),
            ("control facts right (held out)", percent(summary.control_accuracy)),
            ("JSON replies that parse (rows tagged json)", percent(summary.json_valid_rate))]
    return "\n".join(f"{label:<44} {value:>10}" for label, value in rows)


@click.command(context_settings={"show_default": True})
@click.option("--model", "model_name", default="tiny", help="Model folder (base or OUT/merged), hub id, or `tiny`.")
@click.option("--adapter", default=None, help="A PEFT LoRA adapter folder (OUT/adapter) applied on top of --model.")
@click.option("--data", default=None, help="Validation JSONL ({\"messages\": [...], \"tags\": [...]}) or TSV; "
                                            "default: the built-in who-am-i held-out split.")
@click.option("--seq-len", type=int, default=1024, help="Positions kept per validation row.")
@click.option("--quant", type=click.Choice(["none", "nf4"]), default="none", help="Load the linears as 4-bit NF4.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", help="Compute dtype.")
@click.option("--device", default="cpu", help="cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON object instead of the table.")
@user_errors_as_messages
def main(model_name, adapter, data, seq_len, quant, dtype, device, as_json):
    dtype = getattr(torch, dtype)
    model = load_model(model_name, dtype, device, quant)
    lora = load_inference_adapter(adapter, model.config, dtype, device) if adapter else None
    summary = summarize(model, lora, data, seq_len)
    click.echo(json.dumps(asdict(summary)) if as_json else table(summary))


if __name__ == "__main__":
    main()
