"""Show, token by token, how one (prompt, answer) pair becomes a training example.

    python scripts/show_example.py --prompt 你是誰 --target "我是 F# 之神"

Prints the rendered chat text, then one row per position: what the model reads, what it
must predict, and whether that prediction is graded (the answer) or ignored (the prompt).
"""

import click

from .. import IGNORE_INDEX, example_from_prompt_target, load_tokenizer, render_chat
from ..cli import user_errors_as_messages


@click.command()
@click.option("--prompt", default="你是誰", show_default=True, help="The user's question.")
@click.option("--target", default="我是 F# 之神", show_default=True, help="The answer the model should learn.")
@click.option("--seq-len", default=96, show_default=True, help="Keep at most this many positions (from the right).")
@click.option("--tokenizer", "tokenizer_name", default="tiny", show_default=True,
              help="`tiny` (the offline Qwen3 tokenizer) or a model directory with tokenizer.json.")
@user_errors_as_messages
def main(prompt: str, target: str, seq_len: int, tokenizer_name: str) -> None:
    tokenizer = load_tokenizer(tokenizer_name)
    rendered = render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
    click.echo(f"rendered prompt + answer:\n{rendered}{target}<|im_end|>\n")
    example = example_from_prompt_target(tokenizer, prompt, target, seq_len)
    next_ids = example.input_ids[1:] + example.labels[-1:]  # the shift, undone for display
    click.echo(f"{'pos':>4}  {'reads':<20} {'next token':<20} graded")
    for position, (read, following, label) in enumerate(zip(example.input_ids, next_ids, example.labels)):
        graded = "yes (answer)" if label != IGNORE_INDEX else "no (prompt)"
        click.echo(f"{position:>4}  {tokenizer.decode([read])!r:<20} {tokenizer.decode([following])!r:<20} {graded}")
    click.echo(f"\n{len(example.input_ids)} positions, {example.answer_token_count} graded answer tokens")


if __name__ == "__main__":
    main()
