"""Preparing your own data: readers, normalisation, checks, deduplication, the split, mixing, and a
report that accounts for every row."""

import ast
import csv
import json
import re
import subprocess
import sys
import unicodedata
from concurrent.futures import Future
from pathlib import Path

import pytest
from click.testing import CliRunner

from trainer.commands.prepare_data import main as prepare_main
from trainer.errors import TrainerError
from trainer.job.evaluate import is_usable
from trainer.prep.pipeline import one_ahead
from trainer.prep.prepare import (Row, TokenCount, answer_pieces, mix, normalise, normalise_text, normalised_weights,
                                  problem_with, prompt_key, row_key, split, token_counts, val_score)
from trainer.prep.sources import detect_format, stream_records, to_conversation
from trainer.qwen3.generate import Answer
from trainer.text.chat import answer_spans, render_chat
from trainer.text.data import encode_segments, last_answer_length
from trainer.text.readers import Conversation

REPO = Path(__file__).resolve().parent.parent


def conversation(*turns: tuple[str, str], **extra) -> Conversation:
    return Conversation(tuple({"role": role, "content": content} for role, content in turns), **extra)


def records(path: Path, **columns) -> list:
    fmt = detect_format(path)
    return [(r.where, to_conversation(r.row, fmt.schema, r.where).messages if r.row else r.problem)
            for r in stream_records(path, fmt, columns or None)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n"
                            for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------


def test_alpaca_with_system_history_and_input(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"system": "Be brief.", "history": [["Hi", "Hello!"]], "instruction": "Translate",
                                 "input": "貓", "output": "cat"},
                                {"instruction": "Name a fruit", "input": "  ", "output": "apple"}]), encoding="utf-8")
    assert str(detect_format(path)) == "alpaca (json list)"
    (where, first), (_, second) = records(path)
    assert where == f"{path}:row 1"
    assert first == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Translate\n\n貓"},
                     {"role": "assistant", "content": "cat"})
    assert second[-2:] == ({"role": "user", "content": "Name a fruit"}, {"role": "assistant", "content": "apple"})


def test_sharegpt_with_a_function_call_and_its_observation(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [
        {"from": "system", "value": "You can call tools."}, {"from": "human", "value": "Weather?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": {}}'},
        {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "It is sunny."}],
        "tools": '[{"name": "weather", "description": "Today\'s weather", "parameters": {}}]'}])
    assert str(detect_format(path)) == "sharegpt (jsonl)"
    [(_, messages)] = records(path)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2]["tool_calls"] == [{"type": "function", "function": {"name": "weather", "arguments": {}}}]
    assert messages[3]["content"] == "sunny"


GLAIVE_TOOLS = [{"name": "get_news_headlines", "description": "Get the latest news headlines",
                 "parameters": {"type": "object", "properties": {"country": {"type": "string"}},
                                "required": ["country"]}},
                {"name": "convert_currency", "description": "Convert an amount",
                 "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}}}]


def glaive_row(*calls: dict, **extra) -> dict:
    """A row as LLaMA-Factory's glaive_toolcall demos publish it: tools as a JSON string of bare schemas."""
    return {"conversations": [{"from": "human", "value": "Headlines for the United States, and 5 USD in EUR?"},
                              {"from": "function_call", "value": json.dumps(list(calls) if len(calls) > 1 else calls[0])},
                              {"from": "observation", "value": '{"headlines": ["A", "B"]}'},
                              {"from": "gpt", "value": "Here are the headlines: A, B."}],
            "tools": json.dumps(GLAIVE_TOOLS)} | extra


NEWS_CALL = {"name": "get_news_headlines", "arguments": {"country": "United States"}}
MONEY_CALL = {"name": "convert_currency", "arguments": {"amount": 5}}


def test_a_glaive_row_renders_as_the_same_conversation_in_the_messages_schema():
    """tools as a JSON string of bare schemas, two calls in one function_call turn, an observation and a
    top-level system: byte for byte what the messages schema says with OpenAI-style tools."""
    glaive = to_conversation(glaive_row(NEWS_CALL, MONEY_CALL, system="Use the tools."), "sharegpt", "g.json:1")
    written = {"messages": [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Headlines for the United States, and 5 USD in EUR?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": NEWS_CALL},
                                                              {"type": "function", "function": MONEY_CALL}]},
        {"role": "tool", "content": '{"headlines": ["A", "B"]}'},
        {"role": "assistant", "content": "Here are the headlines: A, B."}],
        "tools": [{"type": "function", "function": tool} for tool in GLAIVE_TOOLS]}
    messages = to_conversation(written, "messages", "m.jsonl:1")
    rendered = render_chat(list(glaive.messages), tools=list(glaive.tools))
    assert rendered == render_chat(list(messages.messages), tools=list(messages.tools))
    assert rendered.startswith("<|im_start|>system\nUse the tools.\n\n# Tools\n")
    assert '\n{"type": "function", "function": {"name": "get_news_headlines", ' in rendered
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_news_headlines", "arguments": {"country": '
            '"United States"}}\n</tool_call>\n<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 5}}'
            '\n</tool_call><|im_end|>') in rendered


@pytest.mark.parametrize("row, reason", [
    (glaive_row({"name": "book_flight", "arguments": {}}),
     "function_call names 'book_flight', which is not among the row's tools (get_news_headlines, convert_currency)"),
    (glaive_row({"name": "get_news_headlines", "arguments": "{country: US}"}),
     "function_call 'get_news_headlines' has arguments that are not JSON"),
    (glaive_row(NEWS_CALL, tools="[{name: x}]"), '"tools" is a string but not JSON'),
    (glaive_row(NEWS_CALL) | {"conversations": [{"from": "human", "value": "Hi"},
                                                {"from": "function_call", "value": "get_news_headlines(US)"}]},
     "turn 1: function_call is not JSON"),
])
def test_a_tool_call_that_does_not_fit_its_row_is_rejected_with_the_reason(row, reason):
    with pytest.raises(TrainerError, match=re.escape(reason)):
        to_conversation(row, "sharegpt", "g.json:7")


def test_csv_with_quoted_commas_and_newlines_and_named_columns(tmp_path):
    path = tmp_path / "faq.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "question", "answer"])
        writer.writerow(["1", "Line one,\nline two", 'She said "yes", then left'])
    [(where, messages)] = records(path, prompt="question", target="answer")
    assert where == f"{path}:row 1"
    assert messages == ({"role": "user", "content": "Line one,\nline two"},
                        {"role": "assistant", "content": 'She said "yes", then left'})
    with pytest.raises(TrainerError, match=r"no column 'prompt' in the header \['id', 'question', 'answer'\]"):
        records(path)


def test_tsv_and_messages_jsonl_keep_tools_ids_and_tags(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("# a comment\n你是誰\t我是 F# 之神\nno tab here\n", encoding="utf-8")
    assert records(tsv) == [(f"{tsv}:2", ({"role": "user", "content": "你是誰"}, {"role": "assistant", "content": "我是 F# 之神"})),
                            (f"{tsv}:3", "expected `prompt<TAB>target`, found no tab")]
    jsonl = write_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                                "tools": [{"type": "function", "function": {"name": "f"}}], "id": 7,
                                                "tags": ["json"]}])
    record = next(stream_records(jsonl, detect_format(jsonl)))
    kept = to_conversation(record.row, "messages", record.where)
    assert (kept.tools, kept.id, kept.tags) == (({"type": "function", "function": {"name": "f"}},), "7", ("json",))


def test_an_unknown_json_schema_and_missing_pyarrow_are_one_line(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "x.jsonl", [{"question": "q"}])
    with pytest.raises(TrainerError, match=r"none of \"messages\", \"instruction\" \(Alpaca\) or \"conversations\""):
        detect_format(path)
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(TrainerError, match=r'reading Parquet needs pyarrow: pip install -e "\.\[parquet\]"'):
        detect_format(tmp_path / "x.parquet")


# ---------------------------------------------------------------------------
# Normalisation and checks
# ---------------------------------------------------------------------------


def test_normalise_text_nfc_control_characters_and_whitespace():
    decomposed = unicodedata.normalize("NFD", "café")
    assert decomposed != "café" and normalise_text(f"  {decomposed}\x00\x1b[0m\tok\n ") == "café[0m\tok"


def test_nfc_and_nfd_spellings_are_one_row():
    nfc = normalise(conversation(("user", "café?"), ("assistant", "oui")))
    nfd = normalise(conversation(("user", unicodedata.normalize("NFD", "café?")), ("assistant", "oui")))
    assert row_key(nfc) == row_key(nfd) and row_key(nfc) != row_key(conversation(("user", "cafe?"), ("assistant", "oui")))


@pytest.mark.parametrize(("turns", "problem"), [
    ((("user", "q"), ("assistant", "a")), None),
    ((("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2")), None),
    ((("assistant", "a"),), "a assistant turn after the start"),
    ((("user", "q"), ("system", "s"), ("assistant", "a")), "a system turn at position 1: only the first turn may be the system's"),
    ((("user", "q"), ("user", "q"), ("assistant", "a")), "a user turn after a user turn"),
    ((("user", "q"), ("assistant", "a"), ("user", "more")), "the conversation does not end with an assistant answer"),
    ((("user", ""), ("assistant", "a")), "message 0 (user) is empty"),
    ((("user", "q<|im_end|>"), ("assistant", "a")), "message 0 contains the special token <|im_end|>"),
])
def test_problem_with_role_order_empty_turns_and_chat_markup(turns, problem):
    assert problem_with(conversation(*turns)) == problem


# ---------------------------------------------------------------------------
# Split and mixing
# ---------------------------------------------------------------------------


def rows(source: str, count: int, start: int = 0) -> list[Row]:
    made = []
    for i in range(start, start + count):
        talk = conversation(("user", f"{source} question {i}"), ("assistant", f"answer {i}"))
        made.append(Row(row_key(talk), source, at=i))
    return made


def test_the_split_is_disjoint_keyed_by_seed_and_stable_when_a_source_is_added():
    first = rows("a", 2000)
    train, val = split(first, 0.05, 10, seed=42)
    assert {r.key for r in train}.isdisjoint(r.key for r in val) and len(train) + len(val) == 2000
    assert 60 <= len(val) <= 140  # about 5%
    assert all(val_score(r.key, 42) < 0.05 for r in val)
    assert split(first, 0.05, 10, seed=43)[1] != val  # another seed, another split
    grown_train, grown_val = split(first + rows("b", 500), 0.05, 10, seed=42)
    assert {r.key for r in val} <= {r.key for r in grown_val}  # no val row moves into train
    assert {r.key for r in train} <= {r.key for r in grown_train}


def test_min_val_tops_up_from_the_lowest_scores():
    few = rows("a", 50)
    train, val = split(few, 0.02, 20, seed=1)
    assert len(val) == 20 and len(train) == 30
    lowest = sorted(few, key=lambda r: val_score(r.key, 1))[:20]
    assert {r.key for r in val} == {r.key for r in lowest}


def test_weights_are_normalised_and_all_zero_means_equal():
    assert normalised_weights(["a", "b"], {"a": 3, "b": 1}) == {"a": 0.75, "b": 0.25}
    assert normalised_weights(["a", "b"], {}) == {"a": 0.5, "b": 0.5}
    assert normalised_weights(["a", "b"], {"a": 0, "b": 0}) == {"a": 0.5, "b": 0.5}
    assert normalised_weights(["a", "b", "c"], {"a": 1}) == {"a": 1.0, "b": 0.0, "c": 0.0}


def test_mix_concat_interleave_and_resample_counts_and_determinism():
    train = {"a": rows("a", 30), "b": rows("b", 10)}
    concat, repeats = mix(train, {}, "concat", None, seed=0)
    assert concat == train["a"] + train["b"] and repeats == {"a": 0, "b": 0}
    interleaved, _ = mix(train, {"a": 1, "b": 3}, "interleave", None, seed=0)
    assert sorted(r.key for r in interleaved) == sorted(r.key for r in concat)  # every row once
    assert interleaved == mix(train, {"a": 1, "b": 3}, "interleave", None, seed=0)[0] != concat
    first_half = interleaved[:20]
    assert sum(r.source == "b" for r in first_half) > 10 * 10 / 40  # b (weight 3) is drawn early
    resampled, repeats = mix(train, {"a": 1, "b": 1}, "resample", 50, seed=0)
    assert sum(r.source == "a" for r in resampled) == 25 and sum(r.source == "b" for r in resampled) == 25
    assert repeats == {"a": 0, "b": 15}  # b has 10 rows: all of them, then 15 repeats
    assert len({r.key for r in resampled if r.source == "a"}) == 25  # a is large enough: no repeats
    assert resampled == mix(train, {"a": 1, "b": 1}, "resample", 50, seed=0)[0]


@pytest.mark.parametrize(("text", "finished", "usable"), [
    ("巴黎", True, True), ('{"n": 1}', True, True), ("", True, False), ("   ", True, False),
    ("The capital is", False, False),  # cut at the token budget
    ("I think I think I think I think", True, False),  # "I think " three times in a row
    ("ha ha ha", True, True),  # a stretch under 8 characters does not count
])
def test_usable_means_not_empty_ended_by_the_model_and_no_loop(text, finished, usable):
    assert is_usable(Answer(text, finished)) is usable


def test_prompt_key_finds_one_prompt_with_two_answers():
    one, two = conversation(("user", "q"), ("assistant", "a")), conversation(("user", "q"), ("assistant", "b"))
    assert prompt_key(one) == prompt_key(two) and row_key(one) != row_key(two)


# ---------------------------------------------------------------------------
# The command: every row accounted for
# ---------------------------------------------------------------------------


def every_kind_of_bad_row(tmp_path: Path) -> Path:
    good = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(30)]
    bad = ["{not json", json.dumps(["a list"]), json.dumps({"messages": "text"}),
           json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
           json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
           json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}),
           json.dumps({"messages": [{"role": "user", "content": "<|im_start|>q"}, {"role": "assistant", "content": "a"}]}),
           json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "long " * 400}]})]
    return write_jsonl(tmp_path / "mixed.jsonl", good + bad + [good[0], good[1]])


def test_quarantine_accounts_for_every_row(tmp_path):
    source = every_kind_of_bad_row(tmp_path)
    result = CliRunner().invoke(prepare_main, [str(tmp_path / "out"), "--source", f"mixed={source}", "--min-val", "5",
                                               "--seq-len", "256"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    counts = report["sources"]["mixed"]
    assert (counts["read"], counts["rejected"], counts["duplicates"], counts["kept"]) == (40, 8, 2, 30)
    assert counts["read"] == counts["rejected"] + counts["duplicates"] + counts["kept"]
    assert counts["train"] + counts["val"] == counts["kept"] and counts["val"] == 5
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["where"] for r in rejected] == [f"{source}:{n}" for n in range(31, 39)]
    reasons = [r["reason"] for r in rejected]
    assert reasons[0].startswith("invalid JSON") and reasons[1] == "expected a JSON object"
    assert "unknown role 'robot'" in reasons[3] and reasons[4] == "no assistant turn to learn from"
    assert reasons[5] == "message 1: the assistant answer is empty"
    assert reasons[6] == "message 0 contains the special token <|im_start|>"
    assert reasons[7].startswith("the last answer alone has ") and reasons[7].endswith("more than --seq-len 256")
    assert rejected[0]["raw"] == "{not json"
    lines = (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == counts["train"] and json.loads(lines[0])["source"] == "mixed"


def test_batched_token_counts_equal_tokenizing_each_row_as_training_does(qwen_tokenizer):
    talks = [conversation(("user", "法國的首都是哪裡？"), ("assistant", "巴黎")),
             conversation(("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"), ("user", "and 3+3?"),
                          ("assistant", "6, of course.")),
             Conversation(({"role": "user", "content": "weather?"},
                           {"role": "assistant", "content": "", "tool_calls": [
                               {"type": "function", "id": "c1", "function": {"name": "get", "arguments": "{}"}}]},
                           {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}),
                          tools=({"type": "function", "function": {"name": "get", "parameters": {}}},))]
    counts = token_counts(qwen_tokenizer, [answer_pieces(talk) for talk in talks])
    for talk, count in zip(talks, counts):
        spans = answer_spans(talk.messages, talk.tools)
        text = render_chat(list(talk.messages), tools=talk.tools)[: spans[-1][1]]
        ids, is_answer = encode_segments(qwen_tokenizer, text, spans)
        assert count == TokenCount(len(ids), sum(is_answer), last_answer_length(is_answer))
    assert counts[0].answer == 2 and counts[1].last_answer < counts[1].answer  # 巴黎 <|im_end|>; two answers


def test_the_report_counts_tokens_per_source(tmp_path):
    short = write_jsonl(tmp_path / "short.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"},
                                                                  {"role": "assistant", "content": "ok"}]}
                                                    for i in range(20)])
    long = write_jsonl(tmp_path / "long.jsonl", [{"messages": [{"role": "user", "content": f"tell me {i} " * 40},
                                                                {"role": "assistant", "content": "fine " * 30}]}
                                                  for i in range(10)])
    result = CliRunner().invoke(prepare_main, [str(tmp_path / "out"), "--source", f"short={short}", "--source",
                                               f"long={long}", "--min-val", "3", "--seq-len", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    short_tokens, long_tokens = report["sources"]["short"]["tokens"], report["sources"]["long"]["tokens"]
    assert short_tokens["rows"] == 20 and long_tokens["rows"] == 10 and report["tokens"]["rows"] == 30
    assert short_tokens["max"] < 20 < long_tokens["p50"] and report["tokens"]["max"] == long_tokens["max"]
    assert short_tokens["over_seq_len"] == 0 and long_tokens["over_seq_len"] == 10 == report["tokens"]["over_seq_len"]
    assert long_tokens["answer_share"] < short_tokens["answer_share"]
    assert "tokens per row" in result.output and result.output.splitlines()[-1].split()[0] == "all"


def test_same_inputs_and_seed_give_byte_identical_outputs(tmp_path):
    source = every_kind_of_bad_row(tmp_path)
    for out in ("one", "two"):
        result = CliRunner().invoke(prepare_main, [str(tmp_path / out), "--source", f"m={source}", "--min-val", "5",
                                                   "--mix", "interleave"])
        assert result.exit_code == 0, result.output
    for name in ("train.jsonl", "val.jsonl", "rejected.jsonl", "report.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_a_newline_in_a_source_path_keeps_every_spooled_row_whole(tmp_path):
    """The spool holds one line per row; a path with a newline in it must not cut its rows."""
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(30)]
    source = write_jsonl(tmp_path / "odd\nname.jsonl", rows + [{"messages": rows[0]["messages"][:1] +
                                                                [{"role": "assistant", "content": "other"}]}])
    result = CliRunner().invoke(prepare_main, [str(tmp_path / "out"), "--source", f"m={source}", "--min-val", "5"])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for name in ("train", "val") for line in (tmp_path / "out" / f"{name}.jsonl").open()]
    assert sorted(row["messages"][-1]["content"] for row in written) == sorted([f"a{i}" for i in range(30)] + ["other"])
    conflict = json.loads((tmp_path / "out" / "report.json").read_text())["conflicts"]["examples"][0]
    assert conflict["first"] == f"{source}:1".replace("\n", "\\n") and conflict["answers"] == ["a0", "other"]


@pytest.mark.parametrize(("args", "message"), [
    ([], "give at least one --source NAME=PATH"),
    (["--source", "nothing"], "'nothing': expected NAME=PATH"),
    (["--source", "a=/no/such/file.jsonl"], "/no/such/file.jsonl: data file not found"),
    (["--source", "a=SRC", "--weight", "b=1"], "'b' is not a --source"),
    (["--source", "a=SRC", "--weight", "a=-1"], "a=-1: a weight cannot be negative"),
    (["--source", "a=SRC", "--mix", "resample"], "--total goes with --mix resample"),
    (["--source", "a=SRC", "--total", "10"], "--total goes with --mix resample"),
    (["--source", "a=SRC", "--val-ratio", "1"], "Invalid value for '--val-ratio'"),
    (["--source", "a=SRC", "--min-val", "100"], "only 31 unique rows are usable (7 rejected): too few for --min-val 100"),
])
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, args, message):
    source = every_kind_of_bad_row(tmp_path)
    result = CliRunner().invoke(prepare_main, [str(tmp_path / "out"), *[a.replace("SRC", str(source)) for a in args]])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert message in result.output.strip().splitlines()[-1], result.output
    assert not (tmp_path / "out").exists()


def test_a_toml_recipe_gives_the_settings_and_the_command_line_wins(tmp_path):
    source = every_kind_of_bad_row(tmp_path)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'mix = "interleave"\nmin_val = 5\nseed = 7\n[sources]\nmine = "{source}"\n', encoding="utf-8")
    result = CliRunner().invoke(prepare_main, [str(tmp_path / "out"), "--recipe", str(recipe), "--seed", "8"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out" / "recipe.json").read_text(encoding="utf-8"))
    assert (written["mix"], written["min_val"], written["seed"], written["sources"]) == ("interleave", 5, 8, [f"mine={source}"])
    assert written["inputs"]["mine"]["bytes"] == source.stat().st_size and len(written["inputs"]["mine"]["sha256"]) == 64


@pytest.mark.slow
def test_four_formats_prepared_then_trained_on(tmp_path):
    """End to end: messages JSONL, an Alpaca list, ShareGPT JSONL and a CSV become train/val, and the
    tiny model trains on the result."""
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"你好 {i}"},
                                                        {"role": "assistant", "content": f'{{"n": {i}}}'}],
                                           "tags": ["json"]} for i in range(40)])
    (tmp_path / "alpaca.json").write_text(json.dumps([{"instruction": f"Say {i}", "input": "", "output": f"{i}"}
                                                      for i in range(40)]), encoding="utf-8")
    write_jsonl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": f"Hey {i}"},
                                                           {"from": "gpt", "value": f"Yo {i}"}]} for i in range(40)])
    with (tmp_path / "faq.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["prompt", "target"])
        writer.writerows([[f"Q{i}, again", f"A{i}"] for i in range(40)])
    out = tmp_path / "prepared"
    sources = [f"--source={name}={tmp_path / file}" for name, file in
               (("chat", "chat.jsonl"), ("alpaca", "alpaca.json"), ("sg", "sg.jsonl"), ("faq", "faq.csv"))]
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), str(out), *sources,
                          "--min-val", "8", "--mix", "interleave"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [report["sources"][n]["format"] for n in ("chat", "alpaca", "sg", "faq")] == \
        ["messages (jsonl)", "alpaca (json list)", "sharegpt (jsonl)", "csv"]
    assert report["train"] + report["val"] == 160 and report["val"] == 8
    assert run.stdout.splitlines()[0].split() == ["source", "format", "read", "rejected", "duplicates", "kept",
                                                  "train", "val", "repeats", "unused"]
    train = subprocess.run([sys.executable, str(REPO / "scripts" / "train_whoami.py"), "--model", "tiny", "--data",
                            str(out), "--steps", "4", "--val-every", "2", "--no-self-test", "--no-export",
                            "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    assert "152 examples" in train.stdout  # the folder's train.jsonl
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "val_perplexity" in r]
    assert [r["step"] for r in scored] == [2, 4] and all("val_identity_hit" not in r for r in records)
    for record in scored:  # its val.jsonl, scored while training
        assert record["val_perplexity"] > 1 and 0 <= record["val_token_accuracy"] <= 1
        assert 0 <= record["val_usability"] <= 1 and 0 <= record["val_json_valid"] <= 1
    evaluated = subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), "--model", "tiny", "--data", str(out),
                                "--json"], capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads(evaluated.stdout)
    assert summary["rows"] == 8 and 0 <= summary["usability"] <= 1 and summary["json_valid_rate"] is not None
    with (tmp_path / "chat.jsonl").open("a", encoding="utf-8") as file:
        file.write('{"messages": [{"role": "user", "content": "half a row"\n')
    direct = subprocess.run([sys.executable, str(REPO / "scripts" / "train_whoami.py"), "--model", "tiny", "--data",
                             str(tmp_path / "chat.jsonl"), "--steps", "1", "--no-self-test", "--no-export",
                             "--out", str(tmp_path / "direct")], capture_output=True, text=True, timeout=600)
    assert direct.returncode == 0, direct.stderr  # one file, one bad row: set aside, and the run goes on
    assert (f"data: 41 rows read, 1 set aside, training on 40; first: {tmp_path / 'chat.jsonl'}:41: invalid JSON"
            in direct.stdout)


def test_the_before_after_table_of_a_data_run_leads_with_its_own_val_set():
    from trainer.job.evaluate import EvalReport
    from trainer.job.whoami_job import eval_table

    scores = {"val_perplexity": 12.345, "val_token_accuracy": 0.5, "val_usability": 0.8, "val_json_valid": 0.25}
    before = EvalReport(0.0, 0.0, 1.0, None, {}, scores)
    after = EvalReport(0.0, 0.0, 1.0, 1.0, {}, {"val_perplexity": 3.21, "val_token_accuracy": 0.9,
                                                "val_usability": 1.0, "val_json_valid": 0.75})
    row = lambda label, first, second: f"{label:<40} {first:>8} {second:>8}"  # noqa: E731
    assert eval_table(before, after, built_in=False, scored=True).splitlines()[1:] == [
        row("val.jsonl answer perplexity", "12.3", "3.21"), row("val.jsonl answer token accuracy", "50.0%", "90.0%"),
        row("val.jsonl usable replies", "80.0%", "100.0%"), row("val.jsonl JSON replies that parse", "25.0%", "75.0%"),
        row("leak: held-out prompts answered with it", "0.0%", "0.0%"),
        row("fact retention (held-out facts)", "100.0%", "100.0%"),
        row("unchanged replies (held-out prompts)", "base", "100.0%")]
    probed = [EvalReport(0.0, 0.0, 1.0, rate, {}, probe_hit_rate=hit) for rate, hit in ((None, 0.0), (1.0, 0.5))]
    lines = eval_table(*probed, built_in=False, scored=False).splitlines()
    assert lines[1] == row("--probe replies with what was expected", "0.0%", "50.0%") and len(lines) == 6
    assert lines[-1] == "(no val.jsonl to score: --data is one file; scripts/prepare_data.py splits one off)"
    plain = EvalReport(0.0, 0.0, 1.0, None, {})
    assert eval_table(plain, plain, built_in=True, scored=False).splitlines()[1] == \
        row("identity hit rate (held-out wordings)", "0.0%", "0.0%")
    assert len(eval_table(plain, plain, built_in=True, scored=False).splitlines()) == 5  # the four rows only


def test_preparing_data_never_imports_torch():
    """qwen3-prepare with the tiny tokenizer runs without torch in memory (about 0.2 GB less)."""
    code = ("import sys; from trainer.commands.prepare_data import main, tokenizer_for; tokenizer_for('tiny'); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"



class RunAtOnce:
    """An executor that runs work when it is submitted, so the order of events is fixed."""

    def submit(self, work, item) -> Future:
        done = Future()
        done.set_result(work(item))
        return done


def test_one_ahead_keeps_the_order_and_starts_the_next_item_before_this_one_is_handled():
    events = []

    def work(item: int) -> int:
        events.append(f"work {item}")
        return item * 10

    for item, result in one_ahead(RunAtOnce(), work, range(3)):
        events.append(f"handle {item} ({result})")
    assert events == ["work 0", "work 1", "handle 0 (0)", "work 2", "handle 1 (10)", "handle 2 (20)"]
    assert list(one_ahead(RunAtOnce(), work, [])) == []


@pytest.mark.parametrize("name, content, row, graded", [
    ("rows.jsonl", [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5", "weight": 0},
                                  {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "4"}]}], 1,
     ["4", "<|im_end|>"]),
    ("alpaca.json", [{"instruction": "Name a fruit", "input": "", "output": "apple", "system": "Be brief."},
                     {"instruction": "Translate", "input": "貓", "output": "cat"}], 2, ["cat", "<|im_end|>"]),
    ("glaive.json", [glaive_row(NEWS_CALL)], 1, None),
    ("pairs.tsv", "你是誰\t我是 F# 之神\n", 1, ["我是", " F", "#", " ", "之", "神", "<|im_end|>"]),
    ("faq.csv", "prompt,target\n\"Hi, there\",Hello\n", 1, ["Hello", "<|im_end|>"]),
])
def test_show_example_shows_which_tokens_of_any_row_are_graded(tmp_path, name, content, row, graded):
    """show_example.py --data FILE --row N, for each format: the rendered row, then which positions are
    graded; a turn weighted out (weight 0) is read but not graded."""
    from trainer.commands.show_example import main as show_main

    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif name.endswith(".jsonl"):
        write_jsonl(path, content)
    else:
        path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(show_main, ["--data", str(path), "--row", str(row), "--seq-len", "400"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{path}:")
    next_tokens = [ast.literal_eval(line[26:47].strip()) for line in result.output.splitlines()
                   if line.endswith("yes (answer)")]
    if graded is None:  # the glaive row: both the tool call and the final answer are graded
        assert "".join(next_tokens).startswith("<tool_call>") and "".join(next_tokens).endswith("A, B.<|im_end|>")
    else:
        assert next_tokens == graded
    assert result.output.splitlines()[-1].endswith(f"{len(next_tokens)} graded answer tokens")
