"""The Qwen3 dense chat formats in plain Python; trainer/text/chat_templates.py has them as Jinja.

Training renders conversations with `render_chat`, so no template engine runs at train time.
Exported models carry the Jinja template of their family, which renders the same text, so a
fine-tuned model sees at inference (transformers, vLLM) exactly the layout it was trained on.

    family          assistant turns                                   generation prompt
    instruct-2507   the content as it is                              <|im_start|>assistant\n
    hybrid          after the last user query: <think>\nreasoning\n    <|im_start|>assistant\n, and with
                    </think>\n\n before the content, on the last turn  enable_thinking=False an empty
                    (an empty block without reasoning) and on turns     <think>\n\n</think>\n\n
                    with reasoning; before it, reasoning is dropped
    thinking-2507   as hybrid                                         <|im_start|>assistant\n<think>\n

A turn's reasoning is its reasoning_content, or what its content has before </think>. No family
adds a default system prompt.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.errors import TrainerError

from .chat_templates import FAMILIES, HYBRID, INSTRUCT_2507, THINKING_2507, chat_template

ROLES = ("system", "user", "assistant", "tool")

GENERATION_PROMPT = "<|im_start|>assistant\n"
EMPTY_THINK = "<think>\n\n</think>\n\n"  # a hybrid model's reply with no reasoning

TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)

TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


@dataclass(frozen=True)
class ChatFormat:
    """How a model is prompted: its family and, for a hybrid model, whether it is asked to think
    (the job asks with thinking off: enable_thinking=False)."""

    family: str = INSTRUCT_2507
    enable_thinking: bool | None = None

    @property
    def thinks(self) -> bool:
        """Whether the model's reply opens with reasoning it writes itself, closed by </think>."""
        return self.family == THINKING_2507 or (self.family == HYBRID and self.enable_thinking is not False)

    def prompt(self, messages: Sequence[dict], tools: list[dict] | None = None) -> str:
        """The conversation rendered up to the reply the model is asked for."""
        return render_chat(list(messages), True, tools, self.family, self.enable_thinking)

    def split_reply(self, text: str) -> tuple[str, str]:
        """(reasoning, answer) of a reply the model wrote after this format's generation prompt. Where
        it thinks, what comes before the first </think> is reasoning (a reply cut before it is all
        reasoning, with no answer yet), and the answer is all that follows it."""
        if not self.thinks:
            return "", text
        reasoning, closed, answer = text.partition("</think>")
        if not closed:
            return text, ""
        return reasoning.removeprefix("<think>").strip("\n"), answer.lstrip("\n")


def render_chat(messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None,
                family: str = INSTRUCT_2507, enable_thinking: bool | None = None) -> str:
    """Render a conversation as the exact text the model reads; append the assistant header to prompt
    a reply (enable_thinking=False: a hybrid model is told not to think, by an empty think block)."""
    prompt = generation_prompt(family, enable_thinking) if add_generation_prompt else ""
    return "".join(render_parts(messages, tools, family)) + prompt


def render_parts(messages: list[dict], tools: list[dict] | None = None, family: str = INSTRUCT_2507) -> list[str]:
    """The rendering in pieces: [system block, then one piece per message] (a leading system
    message's piece is ""). Joined, they are render_chat's text without a generation prompt."""
    if family not in FAMILIES:
        raise TrainerError(f"chat family {family!r}: expected one of {', '.join(FAMILIES)}")
    _check_messages(messages)
    last_query = None if family == INSTRUCT_2507 else last_query_index(messages)
    return [_system_block(messages, tools)] + [_render_message(messages, i, last_query) for i in range(len(messages))]


def generation_prompt(family: str, enable_thinking: bool | None = None) -> str:
    """What opens the reply the model is asked for."""
    if family == THINKING_2507:
        return GENERATION_PROMPT + "<think>\n"
    return GENERATION_PROMPT + (EMPTY_THINK if family == HYBRID and enable_thinking is False else "")


def last_query_index(messages: Sequence[dict]) -> int:
    """The last user turn that asks something (tool results typed as a user turn do not count);
    the last message when there is none. Reasoning before it is dropped by the thinking families."""
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index].get("content")
        if messages[index]["role"] == "user" and isinstance(content, str) and not (
                content.startswith("<tool_response>") and content.endswith("</tool_response>")):
            return index
    return len(messages) - 1


def split_reasoning(message: dict) -> tuple[str, str]:
    """(reasoning, content): reasoning_content, or what the content has before </think> (after
    <think>); the content then is what follows </think>."""
    content = _content(message)
    if isinstance(message.get("reasoning_content"), str):
        return message["reasoning_content"], content
    if "</think>" not in content:
        return "", content
    before, after = content.split("</think>")[0], content.split("</think>")[-1]
    return before.rstrip("\n").split("<think>")[-1].lstrip("\n"), after.lstrip("\n")


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


def _render_message(messages: list[dict], index: int, last_query: int | None) -> str:
    """One message as text; the leading system message renders as '' since the header already holds it.
    last_query: None for instruct-2507, else last_query_index(messages)."""
    message = messages[index]
    role = message["role"]
    if role == "assistant":
        return _assistant_turn(message, index, last_query, is_last=index == len(messages) - 1)
    if role == "tool":
        return _tool_result(messages, index)
    if role == "system" and index == 0:
        return ""
    return f"<|im_start|>{role}\n{_content(message)}<|im_end|>\n"


def _assistant_turn(message: dict, index: int, last_query: int | None, is_last: bool) -> str:
    """Assistant text (with its think block where the family shows one), then each tool call on its
    own line (no newline before a call that opens the turn)."""
    reasoning, content = ("", _content(message)) if last_query is None else split_reasoning(message)
    text = content
    if shows_think_block(index, last_query, is_last, reasoning):
        reasoning, answer = reasoning.strip("\n"), content.lstrip("\n")
        text = f"<think>\n{reasoning}\n</think>\n\n{answer}"
    calls = "\n".join(_tool_call(call, index) for call in message.get("tool_calls") or [])
    if content and calls:
        text += "\n"
    return f"<|im_start|>assistant\n{text}{calls}<|im_end|>\n"


def shows_think_block(index: int, last_query: int | None, is_last: bool, reasoning: str) -> bool:
    """Whether a thinking family writes turn `index`'s think block: only after the last user query
    (last_query None: instruct-2507, never), on the last turn always and elsewhere where it reasoned."""
    return last_query is not None and index > last_query and (is_last or bool(reasoning))


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


QWEN3_CHAT_TEMPLATE = chat_template(INSTRUCT_2507)  # what the tiny world and exports of 2507 models carry


def carries_loss(message: dict) -> bool:
    """An assistant turn is learned unless it says otherwise: OpenAI's per-message "weight": 0, or
    LLaMA-Factory's "loss_weight": 0 (a wrong answer that the next turn corrects, say)."""
    return message.get("role") == "assistant" and message.get("weight", message.get("loss_weight", 1)) != 0


def answer_spans(messages: Sequence[dict], tools: Sequence[dict] | None = None,
                 family: str = INSTRUCT_2507) -> list[tuple[int, int]]:
    """Character spans [start, end) of each learned assistant turn's output in render_chat(messages)
    (a turn weighted out stays in the text, as context, without a span).

    A span ends after that turn's <|im_end|> (tool calls included: they are the assistant's output
    too) and starts where the model's own writing starts: after "<|im_start|>assistant\n" and
    after whatever of the turn the generation prompt holds at inference (prompted_opening): the
    masking policy of each family, in the README's words.
    """
    parts = render_parts(list(messages), list(tools) if tools else None, family)
    spans, offset = [], len(parts[0])
    for message, part in zip(messages, parts[1:]):
        if carries_loss(message):
            body = part[len(GENERATION_PROMPT):]
            spans.append((offset + len(GENERATION_PROMPT) + len(prompted_opening(body, family)),
                          offset + len(part) - len("\n")))
        offset += len(part)
    return spans


def reasoning_parts(messages: Sequence[dict], family: str = INSTRUCT_2507) -> tuple[list[str], list[str]]:
    """(reasoning `family` renders inside a learned answer, reasoning it drops), turn by turn.
    instruct-2507 renders none (a reasoning_content field is dropped; <think> in the content is just
    content); the thinking families drop the reasoning of turns before the last user query."""
    trained, dropped = [], []
    last_query = None if family == INSTRUCT_2507 else last_query_index(messages)
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if last_query is None:
            reasoning = message.get("reasoning_content")
            reasoning = reasoning if isinstance(reasoning, str) else ""
        else:
            reasoning = split_reasoning(message)[0]
        shown = shows_think_block(index, last_query, index == len(messages) - 1, reasoning)
        if reasoning and not shown:
            dropped.append(reasoning)
        elif reasoning and carries_loss(message):
            trained.append(reasoning)
    return trained, dropped


def prompted_opening(body: str, family: str) -> str:
    """What of an assistant turn's text (after its header) belongs to the prompt, not the answer:
    Thinking-2507's "<think>\n", which its generation prompt always opens; and a hybrid model's empty
    think block, which is its generation prompt with thinking off. Reasoning itself is learned."""
    opening = generation_prompt(family, enable_thinking=False).removeprefix(GENERATION_PROMPT)
    return opening if body.startswith(opening) else ""


def reply_opening(family: str) -> str:
    """What a reply without reasoning writes after the generation prompt (with thinking off) and
    before its answer: Thinking-2507 closes the think block its prompt opened."""
    return "\n</think>\n\n" if family == THINKING_2507 else ""
