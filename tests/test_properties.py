"""Properties of data file -> training examples, over arbitrary and half-broken files (hypothesis).

Whatever the file holds, reading it and building examples either raises TrainerError (a message
for the user) or yields rows the loss can trust:

    len(input_ids) == len(labels) <= seq_len      at least one label is graded
    the last graded label is <|im_end|>            a graded label is the next input id
"""

import json
import tempfile
from pathlib import Path

from hypothesis import event, given, settings, strategies as st

from trainer.errors import TrainerError
from trainer.job.examples import build_examples
from trainer.text.readers import read_samples

IGNORE = -100
IM_END = 151645

TRICKY = ["", " ", "\t", "\n", " \n\t ", "<|im_end|>", "<|im_start|>assistant\n", "<|endoftext|>",
          "<think>\n\n</think>\n\n", "<tool_call>", "</tool_call>", "🦀🎉", "👩‍👩‍👧", "你是誰", "我是 F# 之神",
          "é", "\u200b", "#", "\\t"]
pieces = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
contents = st.lists(pieces, max_size=4).map("".join)  # anything, blank included
WORDS = ["我是 F# 之神", "ok", "🦀", "42", "<|im_end|>"]
short = st.lists(pieces, max_size=2).map("".join)
filled = st.tuples(short, st.sampled_from(WORDS), short).map("".join)  # never blank
one_line = filled.map(lambda text: text.replace("\n", " ").replace("\r", " "))  # a TSV field


# ---------------------------------------------------------------------------
# Strategies: TSV text, and JSONL rows that are structured but maybe broken.
# A file is sound lines with at most one doubtful line among them, so that whole files often
# survive and build examples, and every kind of breakage still turns up.
# ---------------------------------------------------------------------------



def files(good_line: st.SearchStrategy[str], doubtful_line: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Up to four sound lines, with maybe one doubtful line inserted somewhere."""
    def join(parts: tuple[list[str], str | None, int]) -> str:
        lines, doubtful, where = parts
        if doubtful is not None:
            lines.insert(where % (len(lines) + 1), doubtful)
        return "\n".join(lines)

    return st.tuples(st.lists(good_line, max_size=4), st.one_of(st.none(), doubtful_line), st.integers(0, 4)).map(join)


tsv_text = files(st.tuples(one_line, one_line).map("\t".join), st.one_of(
    st.tuples(contents, contents).map("\t".join),  # prompt<TAB>target, either maybe blank or broken by a newline
    st.tuples(one_line, one_line, contents).map("\t".join),  # a tab inside the target
    contents,  # maybe no tab at all
    st.sampled_from(["", "# a comment", "   ", "\r"]),
))

good_arguments = st.one_of(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), contents), max_size=2), contents)
arguments = st.one_of(good_arguments, st.integers(), st.none())
good_call = st.fixed_dictionaries({"type": st.just("function"),
                                   "function": st.fixed_dictionaries({"name": filled, "arguments": good_arguments})})
tool_call = st.one_of(good_call, good_call,
                      st.fixed_dictionaries({"name": st.one_of(contents, st.integers()), "arguments": arguments}),
                      contents, st.integers())
good_turn = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "tool"]), "content": contents}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": filled}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.one_of(st.none(), contents),
                           "tool_calls": st.lists(good_call, min_size=1, max_size=2)}),
)
bad_turn = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "robot", "", "Assistant"]),
                       st.none(), st.integers(0, 3)),
     "content": st.one_of(contents, st.none(), st.integers(), st.lists(contents, max_size=1))},
    optional={"tool_calls": st.one_of(st.lists(tool_call, max_size=2), contents)},
)
last_answer = st.fixed_dictionaries({"role": st.just("assistant"), "content": filled})
good_messages = st.tuples(st.lists(good_turn, max_size=4), last_answer).map(lambda t: [*t[0], t[1]])
tool_spec = st.fixed_dictionaries({"type": st.just("function"),
                                   "function": st.fixed_dictionaries({"name": filled, "description": contents})})
extras = {"tools": st.one_of(st.lists(tool_spec, max_size=2), st.lists(contents, max_size=1), contents),
          "id": st.one_of(st.integers(), contents), "tags": st.one_of(st.lists(contents, max_size=2), contents)}
good_row = st.fixed_dictionaries({"messages": good_messages},
                                 optional={"tools": st.lists(tool_spec, max_size=2), "id": filled,
                                           "tags": st.lists(contents, max_size=2)})
bad_row = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(st.one_of(good_turn, bad_turn), max_size=4), contents, st.none())},
    optional=extras)
jsonl_text = files(st.one_of(good_row.map(lambda r: json.dumps(r, ensure_ascii=False)), good_row.map(json.dumps)),
                   st.one_of(bad_row.map(lambda r: json.dumps(r, ensure_ascii=False)),
                             st.one_of(st.integers(), st.lists(st.integers(), max_size=2), st.none()).map(json.dumps),
                             contents))  # JSON that is not an object; junk, blank, or half a line


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------


def examples_or_error(text: str, suffix: str, tokenizer, seq_len: int):
    """Write text to a temporary data file, read it and build examples; None when TrainerError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            examples, skipped = build_examples(read_samples(path), tokenizer, seq_len)
        except TrainerError as error:
            assert str(error)  # a message for the user, never empty
            return None
    assert skipped >= 0
    return examples


def check_example(example, seq_len: int) -> None:
    ids, labels = example.input_ids, example.labels
    assert len(ids) == len(labels) <= seq_len
    graded = [i for i, label in enumerate(labels) if label != IGNORE]
    assert graded, "an example without a single graded token"
    assert labels[graded[-1]] == IM_END
    for i in graded:
        if i + 1 < len(ids):
            assert labels[i] == ids[i + 1], f"label {i} is not the next input id"


@settings(max_examples=200, deadline=None)
@given(text=tsv_text, seq_len=st.integers(4, 64))
def test_any_tsv_gives_an_error_or_trustworthy_examples(qwen_tokenizer, text, seq_len):
    examples = examples_or_error(text, ".tsv", qwen_tokenizer, seq_len)
    event("TrainerError" if examples is None else "examples built")
    for example in examples or []:
        check_example(example, seq_len)


@settings(max_examples=200, deadline=None)
@given(text=jsonl_text, seq_len=st.integers(4, 64))
def test_any_jsonl_gives_an_error_or_trustworthy_examples(qwen_tokenizer, text, seq_len):
    examples = examples_or_error(text, ".jsonl", qwen_tokenizer, seq_len)
    event("TrainerError" if examples is None else "examples built")
    for example in examples or []:
        check_example(example, seq_len)


def test_the_strategies_reach_both_outcomes(qwen_tokenizer):
    """Guard against a vacuous property: a well-formed file gives examples, a broken one an error."""
    good = examples_or_error("你是誰\t我是 F# 之神\n", ".tsv", qwen_tokenizer, 16)
    assert good is not None and len(good) == 1
    check_example(good[0], 16)
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "🦀"}]}
    assert len(examples_or_error(json.dumps(row), ".jsonl", qwen_tokenizer, 8)) == 1
    assert examples_or_error("no tab", ".tsv", qwen_tokenizer, 16) is None
