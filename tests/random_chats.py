"""Random conversations that exercise every feature of the Qwen3 chat formats, for parity tests.

Each one may have a system message, several user turns, tools, assistant tool calls with object or
string arguments, several tool results in a row, multi-step tool use (call, results, another call),
tool results typed as a user turn, reasoning as reasoning_content or as <think>...</think> inside the
content (with stray newlines around it), and ends on an answer or asks for one, with or without the
thinking switch.
"""

import json
import random
from dataclasses import dataclass

WORDS = ("table", "join", "分區", "索引", "backfill", "café", "naïve", "🌍", "schema", "快照", "x = 1",
         "\"quoted\"")
TOOL = {"type": "function", "function": {"name": "count_rows", "description": "Count rows — 計數",
                                         "parameters": {"type": "object", "properties": {"table": {"type": "string"}}}}}
BARE_TOOL = {"name": "last_load", "parameters": {"type": "object", "properties": {}}}


@dataclass(frozen=True)
class RandomChat:
    messages: list[dict]
    tools: list[dict] | None
    add_generation_prompt: bool
    enable_thinking: bool | None


def text(rng: random.Random, newlines: bool = False) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
    if newlines and rng.random() < 0.3:
        words = rng.choice(["\n", "\n\n", ""]) + words + rng.choice(["\n", "\n\n", ""])
    return words


def tool_call(rng: random.Random) -> dict:
    arguments = {"table": text(rng)}
    call = {"name": "count_rows", "arguments": json.dumps(arguments, ensure_ascii=False) if rng.random() < 0.4
            else arguments}
    return {"type": "function", "function": call} if rng.random() < 0.8 else call


def answer(rng: random.Random, calls: bool) -> dict:
    """An assistant turn: content, maybe reasoning (a field or inside the content), maybe tool calls."""
    message = {"role": "assistant", "content": text(rng, newlines=True)}
    draw = rng.random()
    if draw < 0.25:
        message["reasoning_content"] = text(rng, newlines=True) if rng.random() < 0.8 else ""
    elif draw < 0.5:
        opening = rng.choice(["<think>", "<think>\n", ""])
        message["content"] = f"{opening}{text(rng, newlines=True)}</think>{rng.choice(['', chr(10), chr(10) * 2])}" \
                             f"{message['content']}"
    if calls:
        message["tool_calls"] = [tool_call(rng) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            message["content"] = ""
    return message


def random_chat(rng: random.Random) -> RandomChat:
    messages = [{"role": "system", "content": text(rng)}] if rng.random() < 0.5 else []
    tools = [TOOL] + ([BARE_TOOL] if rng.random() < 0.3 else []) if rng.random() < 0.4 else None
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": text(rng)})
        for step in range(rng.randint(0, 2) if tools else 0):  # multi-step tool use
            messages.append(answer(rng, calls=True))
            results = [{"role": "tool", "content": text(rng)} for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.2:  # tool results typed as a user turn, as some logs have them
                results = [{"role": "user", "content": f"<tool_response>\n{text(rng)}\n</tool_response>"}]
            messages.extend(results)
        messages.append(answer(rng, calls=False))
    asks = rng.random() < 0.4
    if asks and messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": text(rng)})
    return RandomChat(messages, tools, asks, rng.choice([None, True, False]))


def random_chats(count: int, seed: int) -> list[RandomChat]:
    rng = random.Random(seed)
    return [random_chat(rng) for _ in range(count)]
