"""The chat format, checked against hand-written renderings of the Qwen3-4B-Instruct-2507 template.

Each expected string is data, derived by hand from the official template's output format, and
both renderers must produce it: `render_chat` (used in training) and `QWEN3_CHAT_TEMPLATE`
run through transformers' own chat-template renderer (used at inference by exported models).
"""

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from trainer.errors import TrainerError
from trainer.text.chat import QWEN3_CHAT_TEMPLATE, render_chat

TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)
TRANSLATE_TOOL = {
    "type": "function",
    "function": {
        "name": "translate",
        "description": "Übersetzt Text — 翻译文本 🌐",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
}
TRANSLATE_TOOL_JSON = (
    '{"type": "function", "function": {"name": "translate", "description": "Übersetzt Text — 翻译文本 🌐", '
    '"parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}'
)
WEATHER_TOOL = {"name": "get_weather", "parameters": {"city": "string"}}
WEATHER_TOOL_JSON = '{"name": "get_weather", "parameters": {"city": "string"}}'


def case(id_, messages, expected, add_generation_prompt=False, tools=None):
    """One conversation with its expected rendering."""
    return pytest.param(messages, add_generation_prompt, tools, expected, id=id_)


CASES = [
    case(
        "system_user_assistant",
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n",
    ),
    case(
        "generation_prompt",
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n",
        add_generation_prompt=True,
    ),
    case(
        "no_system_no_default_prompt",
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
    ),
    case(
        "system_mid_conversation",
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "c"},
        ],
        "<|im_start|>user\na<|im_end|>\n"
        "<|im_start|>assistant\nb<|im_end|>\n"
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nc<|im_end|>\n",
    ),
    case(
        "multi_turn_multiline",
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "List two colours."},
            {"role": "assistant", "content": "- red\n- blue"},
            {"role": "user", "content": "  One more?  "},
            {"role": "assistant", "content": "- green\n"},
        ],
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nList two colours.<|im_end|>\n"
        "<|im_start|>assistant\n- red\n- blue<|im_end|>\n"
        "<|im_start|>user\n  One more?  <|im_end|>\n"
        "<|im_start|>assistant\n- green\n<|im_end|>\n",
    ),
    case(
        "unicode_emoji_chinese",
        [{"role": "user", "content": "你好，世界 🌍 café"}, {"role": "assistant", "content": "Grüße! 😀 再见"}],
        "<|im_start|>user\n你好，世界 🌍 café<|im_end|>\n<|im_start|>assistant\nGrüße! 😀 再见<|im_end|>\n",
    ),
    case(
        "tool_call_dict_arguments_after_text",
        [
            {"role": "user", "content": "Weather in Zürich?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}},
                    }
                ],
            },
        ],
        "<|im_start|>user\nWeather in Zürich?<|im_end|>\n"
        "<|im_start|>assistant\nLet me check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}\n</tool_call><|im_end|>\n',
    ),
    case(
        "tool_call_string_arguments_kept_verbatim",
        [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": '{"q":"x"}'}}],
            }
        ],
        '<|im_start|>assistant\n<tool_call>\n{"name": "search", "arguments": {"q":"x"}}\n</tool_call><|im_end|>\n',
    ),
    case(
        "several_tool_calls_with_content",
        [
            {
                "role": "assistant",
                "content": "Two lookups.",
                "tool_calls": [
                    {"function": {"name": "a", "arguments": {}}},
                    {"function": {"name": "b", "arguments": {"n": [1, 2]}}},
                ],
            }
        ],
        "<|im_start|>assistant\nTwo lookups.\n"
        '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"n": [1, 2]}}\n</tool_call><|im_end|>\n',
    ),
    case(
        "several_tool_calls_content_none",
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"function": {"name": "a", "arguments": {"x": 1}}},
                    {"function": {"name": "b", "arguments": "{}"}},
                ],
            }
        ],
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call><|im_end|>\n',
    ),
    case(
        "tool_call_without_function_wrapper",
        [{"role": "assistant", "content": "Adding.", "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2.5}}]}],
        '<|im_start|>assistant\nAdding.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2.5}}\n'
        "</tool_call><|im_end|>\n",
    ),
    case(
        "consecutive_tool_results_share_one_user_turn",
        [
            {"role": "user", "content": "Compare."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"function": {"name": "price", "arguments": {"item": "tea"}}},
                    {"function": {"name": "price", "arguments": {"item": "茶"}}},
                ],
            },
            {"role": "tool", "content": "3 EUR"},
            {"role": "tool", "content": "20 元"},
            {"role": "assistant", "content": "Tea costs 3 EUR or 20 元."},
        ],
        "<|im_start|>user\nCompare.<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "price", "arguments": {"item": "tea"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "price", "arguments": {"item": "茶"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n3 EUR\n</tool_response>\n<tool_response>\n20 元\n</tool_response>"
        "<|im_end|>\n"
        "<|im_start|>assistant\nTea costs 3 EUR or 20 元.<|im_end|>\n",
    ),
    case(
        "tool_result_last_then_generation_prompt",
        [
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "now", "arguments": {}}}]},
            {"role": "tool", "content": "12:00"},
        ],
        "<|im_start|>user\nTime?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n",
        add_generation_prompt=True,
    ),
    case(
        "tools_with_system_message",
        [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "Translate 'hi'."}],
        "<|im_start|>system\nBe helpful.\n\n"
        + TOOLS_INTRO
        + "\n"
        + TRANSLATE_TOOL_JSON
        + "\n"
        + WEATHER_TOOL_JSON
        + TOOLS_OUTRO
        + "<|im_start|>user\nTranslate 'hi'.<|im_end|>\n",
        tools=[TRANSLATE_TOOL, WEATHER_TOOL],
    ),
    case(
        "tools_without_system_message",
        [{"role": "user", "content": "Translate 'hi'."}],
        "<|im_start|>system\n"
        + TOOLS_INTRO
        + "\n"
        + TRANSLATE_TOOL_JSON
        + TOOLS_OUTRO
        + "<|im_start|>user\nTranslate 'hi'.<|im_end|>\n<|im_start|>assistant\n",
        add_generation_prompt=True,
        tools=[TRANSLATE_TOOL],
    ),
    case(
        "empty_tools_list_means_no_tools",
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n",
        tools=[],
    ),
    case(
        "non_string_content_renders_empty",
        [{"role": "user", "content": [{"type": "text", "text": "ignored"}]}, {"role": "assistant"}],
        "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n",
    ),
    case("empty_conversation_generation_prompt", [], "<|im_start|>assistant\n", add_generation_prompt=True),
]


def render_with_transformers(messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None) -> str:
    """Render QWEN3_CHAT_TEMPLATE the way transformers' apply_chat_template does, without a tokenizer."""
    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=QWEN3_CHAT_TEMPLATE,
        add_generation_prompt=add_generation_prompt,
    )
    return rendered[0]


@pytest.mark.parametrize("messages,add_generation_prompt,tools,expected", CASES)
def test_render_chat_matches_official_format(messages, add_generation_prompt, tools, expected):
    assert render_chat(messages, add_generation_prompt=add_generation_prompt, tools=tools) == expected


@pytest.mark.parametrize("messages,add_generation_prompt,tools,expected", CASES)
def test_jinja_template_matches_official_format(messages, add_generation_prompt, tools, expected):
    assert render_with_transformers(messages, add_generation_prompt, tools) == expected


@pytest.mark.parametrize(
    "messages,index",
    [
        ([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}], 1),
        ([{"content": "no role"}], 0),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, "just text"], 2),
    ],
    ids=["unknown_role", "missing_role", "not_a_dict"],
)
def test_bad_message_names_index_and_allowed_roles(messages, index):
    with pytest.raises(TrainerError, match=rf"message {index}: role must be one of system, user, assistant, tool"):
        render_chat(messages)


def test_tool_call_without_name_names_message_index():
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]
    with pytest.raises(TrainerError, match="message 1: each tool call needs a name and arguments"):
        render_chat(messages)
