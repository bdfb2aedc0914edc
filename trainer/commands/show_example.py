"""Show, token by token, how one row becomes a training example: which positions are graded.

    python scripts/show_example.py --prompt 你是誰 --target "我是 F# 之神"
    python scripts/show_example.py --data my_rows.jsonl --row 3        # any format prepare_data.py reads
    python scripts/show_example.py --data my_rows.jsonl --family hybrid  # as a hybrid-thinking Qwen3 learns it

Prints the rendered chat text, then one row per position: what the model reads, what it
must predict, and whether that prediction is graded (answer text the row teaches) or not (the
prompt, or a turn weighted out). The user's check of their own data before a long run. With
--family, the row is rendered and masked as that Qwen3 format does (see the README's masking
policy): which reasoning is learned, and which think block is prompt.
"""

from itertools import islice
from pathlib import Path

import click

from .. import IGNORE_INDEX, example_from_prompt_target, load_tokenizer, render_chat
from ..cli import user_errors_as_messages
from ..errors import TrainerError
from ..prep.sources import detect_format, stream_records, to_conversation
from ..text.chat import reply_opening
from ..text.chat_templates import FAMILIES, INSTRUCT_2507
from ..text.data import Example, example_from_messages
from ..text.readers import Conversation
from ..text.tokenizer import Tokenizer


def conversation_at(path: Path, row: int) -> Conversation:
    """Row `row` (1 = the first record) of a data file in any format prepare_data.py reads."""
    source_format = detect_format(path)
    record = next(islice(stream_records(path, source_format), row - 1, None), None)
    if record is None:
        raise TrainerError(f"--row {row}: {path} has fewer rows")
    if record.row is None:
        raise TrainerError(f"{record.where}: {record.problem}")
    return to_conversation(record.row, source_format.schema, record.where)


def show_positions(tokenizer: Tokenizer, example: Example) -> None:
    """One line per position: what is read, what comes next, and whether that is graded."""
    next_ids = example.input_ids[1:] + example.labels[-1:]  # the shift, undone for display
    click.echo(f"{'pos':>4}  {'reads':<20} {'next token':<20} graded")
    for position, (read, following, label) in enumerate(zip(example.input_ids, next_ids, example.labels)):
        graded = "yes (answer)" if label != IGNORE_INDEX else "no (prompt)"
        click.echo(f"{position:>4}  {tokenizer.decode([read])!r:<20} {tokenizer.decode([following])!r:<20} {graded}")
    click.echo(f"\n{len(example.input_ids)} positions, {example.answer_token_count} graded answer tokens")


@click.command()
@click.option("--prompt", default="你是誰", show_default=True, help="The user's question.")
@click.option("--target", default="我是 F# 之神", show_default=True, help="The answer the model should learn.")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Show a row of this data file instead (JSONL, JSON list, TSV, CSV, Parquet; any convention "
                   "prepare_data.py reads).")
@click.option("--row", type=click.IntRange(min=1), default=1, show_default=True, help="Which row of --data (1 = the first).")
@click.option("--seq-len", default=96, show_default=True, help="Keep at most this many positions (from the right).")
@click.option("--tokenizer", "tokenizer_name", default="tiny", show_default=True,
              help="`tiny` (the offline Qwen3 tokenizer) or a model directory with tokenizer.json.")
@click.option("--family", type=click.Choice(FAMILIES), default=INSTRUCT_2507, show_default=True,
              help="The Qwen3 chat format: instruct-2507, hybrid (the original Qwen3 release, thinking off for "
                   "--prompt) or thinking-2507.")
@user_errors_as_messages
def main(prompt: str, target: str, data: Path | None, row: int, seq_len: int, tokenizer_name: str, family: str) -> None:
    tokenizer = load_tokenizer(tokenizer_name)
    if data is None:
        rendered = render_chat([{"role": "user", "content": prompt}], True, family=family, enable_thinking=False)
        click.echo(f"rendered prompt + answer:\n{rendered}{reply_opening(family)}{target}<|im_end|>\n")
        show_positions(tokenizer, example_from_prompt_target(tokenizer, prompt, target, seq_len, family=family))
        return
    conversation = conversation_at(data, row)
    tools = list(conversation.tools) if conversation.tools else None
    rendered = render_chat(list(conversation.messages), tools=tools, family=family)
    click.echo(f"{conversation.source}, rendered:\n{rendered}")
    show_positions(tokenizer, example_from_messages(tokenizer, conversation.messages, seq_len, tools, family=family))


if __name__ == "__main__":
    main()
