"""The Qwen3-4B-Instruct-2507 chat format, in plain Python and as a Jinja template.

Training renders conversations with `render_chat`, so no template engine runs at train time.
Exported models carry `QWEN3_CHAT_TEMPLATE`, which renders the same text, so a fine-tuned model
sees at inference (transformers, vLLM) exactly the prompt layout it was trained on.
The format never adds a default system prompt or a <think> block: Instruct-2507 does not think.
"""

import json
from collections.abc import Sequence

from trainer.errors import TrainerError

ROLES = ("system", "user", "assistant", "tool")

GENERATION_PROMPT = "<|im_start|>assistant\n"

TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)

TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


def render_chat(
    messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None
) -> str:
    """Render a conversation as the exact text the model reads; append the assistant header to prompt a reply."""
    _check_messages(messages)
    parts = [_system_block(messages, tools)]
    parts += [_render_message(messages, index) for index in range(len(messages))]
    if add_generation_prompt:
        parts.append(GENERATION_PROMPT)
    return "".join(parts)


def _check_messages(messages: list[dict]) -> None:
    """Fail on a malformed message up front, since the official template would silently drop it."""
    if not isinstance(messages, list):
        raise TrainerError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise TrainerError(
                f"message {index}: role must be one of {', '.join(ROLES)}; got {message!r}"
            )


def _content(message: dict) -> str:
    """The message text; non-string content (None next to tool calls, content-part lists) renders as ''."""
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _starts_with_system(messages: list[dict]) -> bool:
    """A leading system message goes into the header instead of being rendered as a turn."""
    return bool(messages) and messages[0]["role"] == "system"


def _system_block(messages: list[dict], tools: list[dict] | None) -> str:
    """The opening system turn: the leading system message and, when tools are given, their signatures."""
    system = _content(messages[0]) if _starts_with_system(messages) else None
    if not tools:
        return "" if system is None else f"<|im_start|>system\n{system}<|im_end|>\n"
    prefix = "" if system is None else system + "\n\n"
    signatures = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    return f"<|im_start|>system\n{prefix}{TOOLS_INTRO}{signatures}{TOOLS_OUTRO}"


def _render_message(messages: list[dict], index: int) -> str:
    """One message as text; the leading system message renders as '' since the header already holds it."""
    message = messages[index]
    role = message["role"]
    if role == "assistant":
        return _assistant_turn(message, index)
    if role == "tool":
        return _tool_result(messages, index)
    if role == "system" and index == 0:
        return ""
    return f"<|im_start|>{role}\n{_content(message)}<|im_end|>\n"


def _assistant_turn(message: dict, index: int) -> str:
    """Assistant text, then each tool call on its own line (no newline before a call that opens the turn)."""
    content = _content(message)
    calls = "\n".join(_tool_call(call, index) for call in message.get("tool_calls") or [])
    if content and calls:
        content += "\n"
    return f"<|im_start|>assistant\n{content}{calls}<|im_end|>\n"


def _tool_call(call: dict, index: int) -> str:
    """One call as <tool_call> JSON; accepts OpenAI-style {"function": {...}} or a bare {name, arguments}."""
    function = (call.get("function") or call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or "name" not in function or "arguments" not in function:
        raise TrainerError(f"message {index}: each tool call needs a name and arguments; got {call!r}")
    arguments = function["arguments"]
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return f'<tool_call>\n{{"name": "{function["name"]}", "arguments": {arguments}}}\n</tool_call>'


def _tool_result(messages: list[dict], index: int) -> str:
    """A tool result; consecutive results share one user turn, so only the run's ends open and close it."""
    opens = index == 0 or messages[index - 1]["role"] != "tool"
    closes = index == len(messages) - 1 or messages[index + 1]["role"] != "tool"
    body = f"\n<tool_response>\n{_content(messages[index])}\n</tool_response>"
    return ("<|im_start|>user" if opens else "") + body + ("<|im_end|>\n" if closes else "")


# The same format for transformers' `apply_chat_template` and vLLM. Every tag strips the whitespace
# before it ({%- / {{-), so the output does not depend on the engine's trim_blocks/lstrip_blocks.
QWEN3_CHAT_TEMPLATE = r"""
{%- set has_system = messages | length > 0 and messages[0].role == 'system' %}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if has_system %}
        {{- (messages[0].content if messages[0].content is string else '') + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments ' }}
    {{- 'within <tool_call></tool_call> XML tags:\n<tool_call>\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif has_system %}
    {{- '<|im_start|>system\n' + (messages[0].content if messages[0].content is string else '') }}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' + content }}
        {%- for tool_call in message.tool_calls or [] %}
            {%- set function = tool_call.function or tool_call %}
            {%- if content or not loop.first %}
                {{- '\n' }}
            {%- endif %}
            {{- '<tool_call>\n{"name": "' ~ function.name ~ '", "arguments": ' }}
            {{- function.arguments if function.arguments is string else function.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
""".strip()


def carries_loss(message: dict) -> bool:
    """An assistant turn is learned unless it says otherwise: OpenAI's per-message "weight": 0, or
    LLaMA-Factory's "loss_weight": 0 (a wrong answer that the next turn corrects, say)."""
    return message.get("role") == "assistant" and message.get("weight", message.get("loss_weight", 1)) != 0


def answer_spans(messages: Sequence[dict], tools: Sequence[dict] | None = None) -> list[tuple[int, int]]:
    """Character spans [start, end) of each learned assistant turn's output in render_chat(messages)
    (a turn weighted out stays in the text, as context, without a span).

    A span starts after "<|im_start|>assistant\\n" and ends after that turn's "<|im_end|>"
    (tool calls included: they are the assistant's output too). The template only appends,
    so the text before turn i is the rendering of messages[:i] plus the generation prompt.
    """
    spans = []
    for i, message in enumerate(messages):
        if carries_loss(message):
            start = len(render_chat(list(messages[:i]), add_generation_prompt=True, tools=tools))
            end = len(render_chat(list(messages[: i + 1]), tools=tools)) - len("\n")
            spans.append((start, end))
    return spans
