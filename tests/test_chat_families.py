"""The hybrid and Thinking-2507 chat formats: hand-derived renderings of the published rules, and
render_chat against our Jinja templates run by transformers on 600 random conversations a family."""

import json
from collections import Counter

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from random_chats import random_chats
from trainer.errors import TrainerError
from trainer.text.data import IGNORE_INDEX, example_from_messages, example_from_prompt_target
from trainer.text.chat import ChatFormat, last_query_index, render_chat, split_reasoning
from trainer.text.chat_templates import FAMILIES, HYBRID, INSTRUCT_2507, THINKING_2507, chat_template

U, A = "<|im_start|>user\n", "<|im_start|>assistant\n"
END = "<|im_end|>\n"
THINK = "<think>\n\n</think>\n\n"


def think(reasoning: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n"


def case(id_, messages, expected, add_generation_prompt=False, tools=None, enable_thinking=None):
    return pytest.param(messages, add_generation_prompt, tools, enable_thinking, expected, id=id_)


TWO_TURNS = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
             {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2", "reasoning_content": "R2"}]
TOOL_STEPS = [{"role": "user", "content": "Q"},
              {"role": "assistant", "content": "", "reasoning_content": "look", "tool_calls": [
                  {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
              {"role": "tool", "content": "1"},
              {"role": "assistant", "content": "calling", "tool_calls": [{"name": "f", "arguments": '{"x": 2}'}]},
              {"role": "tool", "content": "2"},
              {"role": "assistant", "content": "Done."}]

# Both thinking families render conversations alike; they differ in the generation prompt only.
SHARED = [
    case("last_answer_gets_an_empty_think_block",
         [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         f"{U}Hi{END}{A}{THINK}Hello{END}"),
    case("reasoning_before_the_last_query_is_dropped_after_it_kept", TWO_TURNS,
         f"{U}Q1{END}{A}A1{END}{U}Q2{END}{A}{think('R2')}A2{END}"),
    case("think_inside_the_content_is_the_reasoning",
         [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nmull\n</think>\n\nA"}],
         f"{U}Q{END}{A}{think('mull')}A{END}"),
    case("tool_steps_after_the_query_keep_reasoning_only_where_there_is_some", TOOL_STEPS,
         f"{U}Q{END}{A}{think('look')}<tool_call>\n{{\"name\": \"f\", \"arguments\": {{\"x\": 1}}}}\n</tool_call>{END}"
         f"{U[:-1]}\n<tool_response>\n1\n</tool_response>{END}"
         f"{A}calling\n<tool_call>\n{{\"name\": \"f\", \"arguments\": {{\"x\": 2}}}}\n</tool_call>{END}"
         f"{U[:-1]}\n<tool_response>\n2\n</tool_response>{END}{A}{THINK}Done.{END}"),
    case("a_tool_result_typed_as_user_is_not_a_query",
         [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "R"},
          {"role": "user", "content": "<tool_response>\nok\n</tool_response>"}, {"role": "assistant", "content": "B"}],
         f"{U}Q{END}{A}{think('R')}A{END}{U}<tool_response>\nok\n</tool_response>{END}{A}{THINK}B{END}"),
    case("an_answer_before_the_next_question_has_no_block",
         [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}],
         f"{U}Q{END}{A}A{END}{U}Q2{END}"),
]
GENERATION = [
    (HYBRID, None, A), (HYBRID, True, A), (HYBRID, False, A + THINK),
    (THINKING_2507, None, A + "<think>\n"), (THINKING_2507, False, A + "<think>\n"),
    (INSTRUCT_2507, False, A),
]


@pytest.mark.parametrize("family", [HYBRID, THINKING_2507])
@pytest.mark.parametrize("messages,add_generation_prompt,tools,enable_thinking,expected", SHARED)
def test_thinking_families_render_the_published_rules(family, messages, add_generation_prompt, tools,
                                                      enable_thinking, expected):
    assert render_chat(messages, add_generation_prompt, tools, family, enable_thinking) == expected
    rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=chat_template(family),
                                        add_generation_prompt=add_generation_prompt)
    assert rendered[0] == expected


@pytest.mark.parametrize("family, enable_thinking, prompt", GENERATION)
def test_each_family_opens_the_reply_its_own_way(family, enable_thinking, prompt):
    messages = [{"role": "user", "content": "Q"}]
    assert render_chat(messages, True, family=family, enable_thinking=enable_thinking) == f"{U}Q{END}{prompt}"
    switch = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=chat_template(family),
                                        add_generation_prompt=True, **switch)
    assert rendered[0] == f"{U}Q{END}{prompt}"


def test_instruct_2507_renders_reasoning_as_plain_content():
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>r</think>A"}]
    assert render_chat(messages) == f"{U}Q{END}{A}<think>r</think>A{END}"


def test_reasoning_and_the_last_query_are_found_as_published():
    assert split_reasoning({"content": "\n<think>\n\nr\n\n</think>\n\nA"}) == ("r", "A")
    assert split_reasoning({"content": "x</think>y</think>\nz"}) == ("x", "z")
    assert split_reasoning({"content": "<think>r</think>A", "reasoning_content": "own"}) == ("own", "<think>r</think>A")
    assert last_query_index(TOOL_STEPS) == 0 and last_query_index(TWO_TURNS) == 2
    assert last_query_index([{"role": "assistant", "content": "A"}]) == 0


def test_an_unknown_family_is_refused():
    with pytest.raises(TrainerError, match="chat family 'qwen2': expected one of instruct-2507, hybrid, thinking-2507"):
        render_chat([], family="qwen2")


def features(chat) -> set[str]:
    """Which rules of the thinking families a random conversation exercises."""
    found, last_query = set(), last_query_index(chat.messages)
    for index, message in enumerate(chat.messages):
        if message["role"] != "assistant":
            found |= {"tool result typed as user"} if message["content"].startswith("<tool_response>") else set()
            continue
        reasoning = split_reasoning(message)[0]
        found |= {"tool calls"} if message.get("tool_calls") else set()
        if index < last_query and reasoning:
            found.add("reasoning dropped before the last query")
        elif index > last_query and index < len(chat.messages) - 1:
            found.add("reasoning kept on an earlier step" if reasoning else "an earlier step without reasoning")
        elif index == len(chat.messages) - 1:
            found.add("last answer with reasoning" if reasoning else "last answer, empty block")
    if chat.add_generation_prompt:
        found.add(f"generation prompt, enable_thinking={chat.enable_thinking}")
    return found


@pytest.mark.parametrize("family", FAMILIES)
def test_render_chat_equals_the_jinja_template_on_600_random_conversations(family):
    chats = random_chats(600, seed=FAMILIES.index(family))
    seen = Counter(feature for chat in chats for feature in features(chat))
    assert len(seen) == 10 and min(seen.values()) >= 20, seen  # every rule, many times
    for number, chat in enumerate(chats):
        switch = {} if chat.enable_thinking is None else {"enable_thinking": chat.enable_thinking}
        theirs, _ = render_jinja_template(conversations=[chat.messages], tools=chat.tools,
                                          chat_template=chat_template(family),
                                          add_generation_prompt=chat.add_generation_prompt, **switch)
        ours = render_chat(chat.messages, chat.add_generation_prompt, chat.tools, family, chat.enable_thinking)
        assert ours == theirs[0], f"conversation {number}"


# ---------------------------------------------------------------------------
# The masking policy: which tokens of a row carry loss, in each family
# ---------------------------------------------------------------------------

QA = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
REASONED = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "R"}]


def graded(tokenizer, example) -> list[str]:
    """The graded answers' text, one string per run of graded positions."""
    runs, current = [], []
    for label in [*example.labels, IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs, current = runs + [tokenizer.decode(current)], []
    return runs


@pytest.mark.parametrize("family, messages, expected", [
    (INSTRUCT_2507, QA, ["A<|im_end|>"]),
    (HYBRID, QA, ["A<|im_end|>"]),  # the empty think block is the prompt, as with thinking off
    (THINKING_2507, QA, ["\n</think>\n\nA<|im_end|>"]),  # "<think>\n" is the prompt; closing it is learned
    (INSTRUCT_2507, REASONED, ["A<|im_end|>"]),  # this format has no place for reasoning
    (HYBRID, REASONED, ["<think>\nR\n</think>\n\nA<|im_end|>"]),
    (THINKING_2507, REASONED, ["R\n</think>\n\nA<|im_end|>"]),
    (HYBRID, TWO_TURNS, ["A1<|im_end|>", "<think>\nR2\n</think>\n\nA2<|im_end|>"]),  # R1 is dropped
    (THINKING_2507, TWO_TURNS, ["A1<|im_end|>", "R2\n</think>\n\nA2<|im_end|>"]),
])
def test_each_family_grades_the_models_own_writing(qwen_tokenizer, family, messages, expected):
    example = example_from_messages(qwen_tokenizer, messages, 96, family=family)
    assert graded(qwen_tokenizer, example) == expected
    read = qwen_tokenizer.decode(list(example.input_ids))
    assert ("<think>\n\n</think>\n\nA" in read) == (family != INSTRUCT_2507 and messages is QA)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_prompt_target_pair_is_the_same_example_as_the_conversation(qwen_tokenizer, family):
    pair = example_from_prompt_target(qwen_tokenizer, "你是誰", "我是 F# 之神", 96, family=family)
    assert pair == example_from_messages(qwen_tokenizer, [{"role": "user", "content": "你是誰"},
                                                          {"role": "assistant", "content": "我是 F# 之神"}], 96,
                                         family=family)


@pytest.mark.parametrize("family", FAMILIES)
def test_show_example_renders_and_grades_a_row_as_each_family_does(tmp_path, qwen_tokenizer, family):
    from click.testing import CliRunner

    from trainer.commands.show_example import main as show_main

    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"messages": TWO_TURNS}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(show_main, ["--data", str(path), "--family", family])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{path}:1, rendered:\n{render_chat(TWO_TURNS, family=family)}")
    expected = example_from_messages(qwen_tokenizer, TWO_TURNS, 96, family=family)
    assert result.output.splitlines()[-1] == f"{len(expected.input_ids)} positions, " \
                                             f"{expected.answer_token_count} graded answer tokens"
    assert ("<think>\nR2\n</think>" in result.output) == (family != INSTRUCT_2507)


@pytest.mark.parametrize("chat, text, expected", [
    (ChatFormat(THINKING_2507), "mull it\n</think>\n\nA", ("mull it", "A")),
    (ChatFormat(THINKING_2507), "\n</think>\n\nA</think>B", ("", "A</think>B")),  # the first </think> closes
    (ChatFormat(THINKING_2507), "still thinking", ("still thinking", "")),  # cut before the answer
    (ChatFormat(HYBRID, True), "<think>\nR\n</think>\n\nA", ("R", "A")),
    (ChatFormat(HYBRID, False), "A </think> B", ("", "A </think> B")),  # thinking off: all answer
    (ChatFormat(INSTRUCT_2507), "<think>r</think>A", ("", "<think>r</think>A")),
])
def test_a_reply_is_split_into_reasoning_and_answer_where_the_format_thinks(chat, text, expected):
    assert chat.split_reply(text) == expected


def test_a_thinking_rehearsal_row_trains_its_reasoning_as_the_template_renders_it(qwen_tokenizer):
    from trainer.job.rehearsal import RehearsalRow, as_samples
    from trainer.job.examples import build_examples

    rows = [RehearsalRow("Q", "A", True, "train", reasoning="R"), RehearsalRow("Q2", "B", True, "train")]
    reasoned, plain = build_examples(as_samples(rows), qwen_tokenizer, 96, THINKING_2507)[0]
    assert graded(qwen_tokenizer, reasoned) == ["R\n</think>\n\nA<|im_end|>"]
    assert graded(qwen_tokenizer, plain) == ["\n</think>\n\nB<|im_end|>"]


def test_preparing_data_counts_the_reasoning_a_family_trains_and_the_reasoning_it_drops(tmp_path, monkeypatch,
                                                                                       qwen_tokenizer):
    """Two rows of two turns with reasoning on both answers, prepared for a hybrid model: the last
    answers' reasoning is trained, the first answers' is dropped by the template; instruct-2507
    drops both. report.json and the table say how many tokens each is."""
    from click.testing import CliRunner

    import trainer.commands.prepare_data as prepare_data

    rows = [{"messages": [dict(m, content=f"{m['content']} {n}") for m in TWO_TURNS]} for n in range(12)]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    reports = {}
    for family in (HYBRID, INSTRUCT_2507):
        monkeypatch.setattr(prepare_data, "family_for", lambda model, family=family: family)
        result = CliRunner().invoke(prepare_data.main, [str(tmp_path / family), "--source", f"r={source}",
                                                        "--min-val", "2"])
        assert result.exit_code == 0, result.output
        reports[family] = json.loads((tmp_path / family / "report.json").read_text(encoding="utf-8"))
        assert reports[family]["chat_format"] == family
    r1, r2 = (len(qwen_tokenizer.encode(text)) for text in ("R1", "R2"))
    assert reports[HYBRID]["tokens"]["reasoning_trained"] == 12 * r2
    assert reports[HYBRID]["tokens"]["reasoning_dropped"] == 12 * r1
    assert reports[INSTRUCT_2507]["tokens"]["reasoning_trained"] == 0
    assert reports[INSTRUCT_2507]["tokens"]["reasoning_dropped"] == 12 * (r1 + r2)
    assert "reasoning tokens in all" in result.output
