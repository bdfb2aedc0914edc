"""TSV and JSONL readers: good rows parse to exact values, bad rows name file and line."""

import json

import pytest

from trainer import TrainerError, read_jsonl, read_samples, read_tsv
from trainer.text.chat import render_chat
from trainer.text.data import IGNORE_INDEX, example_from_messages
from trainer.text.readers import Conversation, PromptTarget, conversation_from_row


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_skips_comments_and_blank_lines(tmp_path):
    path = write(tmp_path, "d.tsv", "# header comment\n你是誰\t我是 F# 之神\n\n  \nWho are you?\tI am\tthe god\r\n")
    assert read_tsv(path) == [
        PromptTarget("你是誰", "我是 F# 之神", f"{path}:2"),
        PromptTarget("Who are you?", "I am\tthe god", f"{path}:5"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a\tb\nno tab here\n", 2, "found no tab"),
        ("a\t \n", 1, "target .answer. is empty"),
        ("\tb\n", 1, "prompt is empty"),
    ],
)
def test_tsv_bad_rows_name_file_and_line(tmp_path, text, line, problem):
    path = write(tmp_path, "d.tsv", text)
    with pytest.raises(TrainerError, match=f"{path}:{line}: .*{problem}"):
        read_tsv(path)


def test_missing_file(tmp_path):
    with pytest.raises(TrainerError, match="data file not found"):
        read_tsv(tmp_path / "nope.tsv")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\xff\xfe\tx\n")
    with pytest.raises(TrainerError, match="not UTF-8"):
        read_tsv(path)


ROW = {
    "id": "r1",
    "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": {"city": "台北"}}}
        ]},
        {"role": "tool", "content": "晴"},
        {"role": "assistant", "content": "晴天。"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    "tags": ["tool", "zh"],
}


def test_jsonl_parses_the_sft_guide_format(tmp_path):
    path = write(tmp_path, "d.jsonl", json.dumps(ROW, ensure_ascii=False) + "\n\n")
    [conversation] = read_jsonl(path)
    assert conversation == Conversation(
        tuple(ROW["messages"]), tuple(ROW["tools"]), "r1", ("tool", "zh"), f"{path}:1"
    )


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ('{"messages": [', "invalid JSON"),
        ("[1, 2]", 'non-empty "messages" list'),
        ('{"messages": []}', 'non-empty "messages" list'),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "message 0: unknown role 'robot'"),
        ('{"messages": [{"content": "x"}]}', "message 0: unknown role None"),
        ('{"messages": ["hi"]}', "message 0: expected an object"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}', "message 1: the assistant answer is empty"),
        ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}', "message 0: user content must be a string"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": [{"function": {"arguments": {}}}]}]}', "tool call 0 needs a function name"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}]}', "arguments must be an object"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": {"x": 1}}', '"tools" must be a list'),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tags": "x"}', '"tags" must be a list'),
    ],
)
def test_jsonl_bad_rows_name_file_and_line(tmp_path, row, problem):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    path = write(tmp_path, "d.jsonl", good + "\n" + row + "\n")
    with pytest.raises(TrainerError) as error:
        read_jsonl(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert problem in str(error.value)


def test_read_samples_picks_the_reader_by_extension(tmp_path):
    tsv = write(tmp_path, "d.tsv", "q\ta\n")
    jsonl = write(tmp_path, "d.jsonl", json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    assert isinstance(read_samples(tsv)[0], PromptTarget)
    assert isinstance(read_samples(jsonl)[0], Conversation)
    with pytest.raises(TrainerError, match="unknown data format '.csv'"):
        read_samples(write(tmp_path, "d.csv", "q,a"))


# ---------------------------------------------------------------------------
# The OpenAI chat format: content parts, per-message weight (and LLaMA-Factory's loss_weight)
# ---------------------------------------------------------------------------

OPENAI_ROW = {"messages": [
    {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    {"role": "user", "content": [{"type": "text", "text": "2+2?"}, {"type": "text", "text": "One number."}]},
    {"role": "assistant", "content": "5", "weight": 0},
    {"role": "user", "content": "Are you sure?", "name": "ann"},
    {"role": "assistant", "content": [{"type": "text", "text": "Sorry: 4."}], "weight": 1}]}


def test_content_parts_are_joined_by_a_newline_and_other_fields_pass_unrendered():
    conversation = conversation_from_row(OPENAI_ROW, "o.jsonl:1")
    assert conversation.messages[1]["content"] == "2+2?\nOne number."
    assert conversation.messages[4]["content"] == "Sorry: 4."
    plain = [{"role": m["role"], "content": m["content"]} for m in conversation.messages]
    assert render_chat(list(conversation.messages)) == render_chat(plain)  # weight and name are not rendered


def test_openai_tool_call_ids_and_names_are_accepted_and_not_rendered():
    """OpenAI's tool_calls carry an id, the tool message a tool_call_id and a name: the Qwen3 template
    has no place for them, so the row renders as it would without them."""
    call = {"type": "function", "function": {"name": "count_rows", "arguments": '{"table": "orders"}'}}
    tools = [{"type": "function", "function": {"name": "count_rows", "description": "Count rows",
                                                "parameters": {"type": "object", "properties": {}}}}]
    with_ids = {"id": "chat-7", "tools": tools, "messages": [
        {"role": "user", "content": "Rows in orders?"},
        {"role": "assistant", "content": None, "tool_calls": [call | {"id": "call_1"}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "count_rows", "content": "42"},
        {"role": "assistant", "content": "42 rows."}]}
    bare = {"tools": tools, "messages": [
        {"role": "user", "content": "Rows in orders?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "42"}, {"role": "assistant", "content": "42 rows."}]}
    ours, theirs = conversation_from_row(with_ids, "o.jsonl:7"), conversation_from_row(bare, "o.jsonl:8")
    assert ours.id == "chat-7"
    rendered = render_chat(list(ours.messages), tools=list(ours.tools))
    assert rendered == render_chat(list(theirs.messages), tools=list(theirs.tools))
    assert "call_1" not in rendered and '{"name": "count_rows", "arguments": {"table": "orders"}}' in rendered


@pytest.mark.parametrize("part, kind", [({"type": "image_url", "image_url": {"url": "x.png"}}, "image_url"),
                                        ({"type": "input_audio", "input_audio": {}}, "input_audio"),
                                        ("just text", "str")])
def test_a_part_that_is_not_text_rejects_the_row_naming_its_type(part, kind):
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]},
                        {"role": "assistant", "content": "A cat."}]}
    with pytest.raises(TrainerError, match=f"o.jsonl:3: message 0: content part 1 is of type {kind}, not text"):
        conversation_from_row(row, "o.jsonl:3")


@pytest.mark.parametrize("key", ["weight", "loss_weight"])
def test_a_turn_weighted_out_carries_no_loss_and_stays_in_the_context(qwen_tokenizer, key):
    """The labels of the row whose first answer has weight 0 are those of the same row where only the
    last answer is learned; its text is the same too."""
    row = {"messages": [{(key if name == "weight" else name): value for name, value in m.items()}
                        for m in OPENAI_ROW["messages"]]}
    weighted = conversation_from_row(row, "o.jsonl:1")
    plain = [{"role": m["role"], "content": m["content"]} for m in weighted.messages]
    ours = example_from_messages(qwen_tokenizer, weighted.messages, 96)
    last_only = example_from_messages(qwen_tokenizer, plain, 96, last_turn_only=True)
    assert ours.input_ids == last_only.input_ids and ours.labels == last_only.labels
    graded = qwen_tokenizer.decode([label for label in ours.labels if label != IGNORE_INDEX])
    assert graded == "Sorry: 4.<|im_end|>" and "5" in qwen_tokenizer.decode(ours.input_ids)


def test_a_row_with_every_answer_weighted_out_or_an_odd_weight_is_refused():
    nothing = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 0}]}
    with pytest.raises(TrainerError, match="o.jsonl:4: nothing to learn: every assistant turn is weighted out"):
        conversation_from_row(nothing, "o.jsonl:4")
    odd = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 0.5}]}
    with pytest.raises(TrainerError, match=r"message 1: weight must be 0 \(do not learn this turn\) or 1, got 0.5"):
        conversation_from_row(odd, "o.jsonl:5")
