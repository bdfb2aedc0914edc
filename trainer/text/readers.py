"""Training data files: TSV `prompt<TAB>target` rows and JSONL `{"messages": [...]}` conversations.

Every bad row raises one TrainerError that starts with `FILE:LINE:` and says what was expected,
so a user can open the file at the right place instead of reading a traceback.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TrainerError
from .chat import carries_loss

ROLES = ("system", "user", "assistant", "tool")
PART_SEPARATOR = "\n"  # between the text parts of one message's content, as vLLM joins them when serving


@dataclass(frozen=True)
class PromptTarget:
    """One question and its answer, as in the F# trainer's TSV."""

    prompt: str
    target: str
    source: str = ""  # "FILE:LINE", for error messages
    ends_turn: bool = True  # the target is a whole reply (train <|im_end|> after it), not a cut-off start


@dataclass(frozen=True)
class Conversation:
    """One JSONL row of the SFT guide: messages, optional tools, id and tags."""

    messages: tuple[dict, ...]
    tools: tuple[dict, ...] | None = None
    id: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""


Sample = PromptTarget | Conversation


def read_tsv(path: str | Path) -> list[PromptTarget]:
    """`prompt<TAB>target` per line; blank lines and lines starting with `#` are skipped."""
    rows = []
    for number, line in _numbered_lines(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        source = f"{path}:{number}"
        if "\t" not in line:
            raise TrainerError(f"{source}: expected `prompt<TAB>target`, found no tab")
        prompt, target = line.split("\t", 1)
        if not prompt.strip():
            raise TrainerError(f"{source}: the prompt is empty")
        if not target.strip():
            raise TrainerError(f"{source}: the target (answer) is empty")
        rows.append(PromptTarget(prompt, target, source))
    return rows


def read_jsonl(path: str | Path) -> list[Conversation]:
    """One JSON object per line with a `messages` list; blank lines are skipped."""
    rows = []
    for number, line in _numbered_lines(path):
        if line.strip():
            rows.append(parse_conversation(line, f"{path}:{number}"))
    return rows


def read_samples(path: str | Path) -> list[Sample]:
    """Pick the reader by extension: .tsv/.txt -> TSV, .jsonl/.json -> JSONL."""
    suffix = Path(path).suffix.lower()
    if suffix in (".tsv", ".txt"):
        return list(read_tsv(path))
    if suffix in (".jsonl", ".json"):
        return list(read_jsonl(path))
    raise TrainerError(f"{path}: unknown data format {suffix!r}; expected .tsv (prompt<TAB>target) or .jsonl")


def prepared_file(data: str | Path, name: str) -> Path:
    """--data as given, or, for a folder made by scripts/prepare_data.py, its `name` (train.jsonl, val.jsonl)."""
    path = Path(data)
    if not path.is_dir():
        return path
    if not (path / name).is_file():
        raise TrainerError(f"{path}: a folder given as --data must hold {name} (scripts/prepare_data.py writes it)")
    return path / name


def _numbered_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text without the newline); a missing or non-UTF-8 file is a clear error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainerError(f"{path}: data file not found") from None
    except UnicodeDecodeError as error:
        raise TrainerError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1)]


def parse_conversation(line: str, source: str) -> Conversation:
    """Validate one JSONL row; every problem names the row and, where it applies, the message."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise TrainerError(f"{source}: invalid JSON ({error.msg} at column {error.colno})") from None
    return conversation_from_row(row, source)


def conversation_from_row(row: object, source: str) -> Conversation:
    """A row already parsed from JSON, validated as the guide's schema (see parse_conversation)."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise TrainerError(f'{source}: expected an object with a non-empty "messages" list')
    messages, answered, learned = [], False, False
    for index, message in enumerate(row["messages"]):
        message = _joined_parts(message) if isinstance(message, dict) and isinstance(message.get("content"), list) \
            else message
        problem = message_problem(message)
        if problem:
            raise TrainerError(f"{source}: message {index}: {problem}")
        answered = answered or message["role"] == "assistant"
        learned = learned or carries_loss(message)
        messages.append(message)
    if not answered:
        raise TrainerError(f"{source}: no assistant turn to learn from")
    if not learned:
        raise TrainerError(f"{source}: nothing to learn: every assistant turn is weighted out")
    tools = _check_tools(row.get("tools"), source)
    tags = row.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise TrainerError(f'{source}: "tags" must be a list of strings')
    return Conversation(tuple(messages), tools, _optional_id(row.get("id")), tuple(tags), source)


def _joined_parts(message: dict) -> dict:
    """OpenAI's content as a list of parts ([{"type": "text", "text": ...}]) -> one string, the text
    parts joined by PART_SEPARATOR. A part of another type (an image, audio) cannot be trained on by
    a text model: its content is left as a list, which message_problem names."""
    parts = message["content"]
    if all(map(_is_text_part, parts)):
        return message | {"content": PART_SEPARATOR.join(part["text"] for part in parts)}
    return message


def _is_text_part(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def message_problem(message: object) -> str | None:
    """What is wrong with a message, or None. A message is {"role", "content"}; an assistant may
    carry tool_calls instead of content, and a weight (or loss_weight) of 0 or 1."""
    if not isinstance(message, dict):
        return "expected an object with role and content"
    role = message.get("role")
    if role not in ROLES:
        return f"unknown role {role!r}; expected one of {', '.join(ROLES)}"
    content = message.get("content")
    if isinstance(content, list):
        return _part_problem(content)
    if "weight" in message or "loss_weight" in message:
        for key in ("weight", "loss_weight"):
            if key in message and (message[key] not in (0, 1) or isinstance(message[key], str)):
                return f"{key} must be 0 (do not learn this turn) or 1, got {message[key]!r}"
    calls = message.get("tool_calls")
    if role == "assistant" and calls:
        if content is not None and not isinstance(content, str):
            return "assistant content must be a string or null"
        return _tool_calls_problem(calls)
    if not isinstance(content, str):
        return f"{role} content must be a string"
    if role == "assistant" and not content.strip():
        return "the assistant answer is empty"
    return None


def _part_problem(parts: list) -> str:
    """Content left as a list by _joined_parts: name its first part that is not text."""
    for number, part in enumerate(parts):
        if not _is_text_part(part):
            kind = part.get("type") if isinstance(part, dict) else None
            return (f"content part {number} is of type {kind or type(part).__name__}, not text; "
                    "only text parts can be trained on")
    return "content must be a string or a list of text parts"


def _tool_calls_problem(calls: object) -> str | None:
    """tool_calls: [{"type": "function", "function": {"name": str, "arguments": dict | str}}]."""
    if not isinstance(calls, list):
        return "tool_calls must be a list"
    for number, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f"tool call {number} needs a function name"
        if not isinstance(function.get("arguments"), (dict, str)):
            return f"tool call {number} arguments must be an object or a JSON string"
    return None


def _check_tools(tools: object, source: str) -> tuple[dict, ...] | None:
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise TrainerError(f'{source}: "tools" must be a list of objects')
    return tuple(tools) or None


def _optional_id(value: object) -> str | None:
    return None if value is None else str(value)
