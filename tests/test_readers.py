"""TSV and JSONL readers: good rows parse to exact values, bad rows name file and line."""

import json

import pytest

from trainer import TrainerError, read_jsonl, read_samples, read_tsv
from trainer.text.readers import Conversation, PromptTarget


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
