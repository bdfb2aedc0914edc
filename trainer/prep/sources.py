"""A user's data files, streamed row by row into conversations, whatever format they come in.

Formats (detected from the extension and the first record, and named in the report):
- JSONL with "messages" (the SFT guide's schema: role/content, optional tools, tool_calls, id, tags);
- Alpaca: "instruction", "input", "output", optional "system" and "history" ([[user, assistant], ...]);
  the user turn is the instruction, then a blank line and the input when the input is not empty;
- ShareGPT: "conversations" of {"from", "value"} with from = human / gpt / system / function_call /
  observation, and an optional top-level "system" and "tools", as LLaMA-Factory and the glaive
  tool-calling sets publish them: "tools" may be a JSON string of bare function schemas (each is
  wrapped as {"type": "function", "function": schema}, the form Qwen's examples pass), a
  function_call value is the JSON of one call {"name", "arguments"} or of a list of them (they
  become the assistant turn's tool_calls, rendered as <tool_call> blocks), an observation is a tool
  turn;
- each of the three as JSONL or as one JSON list (a list is read whole; JSONL is streamed);
- TSV `prompt<TAB>target` and CSV with a header (`prompt,target`, or other columns named with
  `columns`), streamed; quoted commas and newlines in CSV work;
- Parquet, streamed in record batches, through the optional pyarrow extra.

Every record comes out as `Record(where, raw, row)`: where = "FILE:LINE" (or "FILE:row N"), raw =
the text as read, for the quarantine file, and row = the parsed mapping or None when it did not
parse (then `problem` says why). Turning a row into a Conversation is `to_conversation`.
"""

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrainerError
from ..text.readers import Conversation, conversation_from_row

FORMATS = ("messages", "alpaca", "sharegpt", "tsv", "csv", "parquet")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "function_call": "assistant", "observation": "tool", "tool": "tool"}
ALPACA_INPUT_SEPARATOR = "\n\n"  # between the instruction and a non-empty input, in the user turn


@dataclass(frozen=True)
class Record:
    """One row as read: where it is, its raw text, and the parsed mapping (None: `problem` says why)."""

    where: str
    raw: str
    row: dict | None
    problem: str | None = None


@dataclass(frozen=True)
class SourceFormat:
    """How a file is read: the row schema, and whether it is JSON lines or one JSON list."""

    schema: str  # one of FORMATS
    container: str  # "jsonl", "json list", "tsv", "csv", "parquet"

    def __str__(self) -> str:
        return self.schema if self.schema == self.container else f"{self.schema} ({self.container})"


def detect_format(path: Path) -> SourceFormat:
    """The format of a data file, from its extension and (for JSON) its first record's keys."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise TrainerError(f"{path}: data file not found")
    if suffix in (".tsv", ".txt"):
        return SourceFormat("tsv", "tsv")
    if suffix == ".csv":
        return SourceFormat("csv", "csv")
    if suffix == ".parquet":
        return SourceFormat(json_schema(first_parquet_row(path), path), "parquet")
    if suffix not in (".jsonl", ".json"):
        raise TrainerError(f"{path}: unknown data format {suffix!r}; expected .jsonl, .json, .tsv, .csv or .parquet")
    with path.open(encoding="utf-8", errors="replace") as file:
        head = file.read(1 << 16)
    lines = head.splitlines() if len(head) < 1 << 16 else head.splitlines()[:-1]  # the last may be cut off
    head = head.lstrip()
    if head.startswith("["):
        rows = read_json_list(path)
        return SourceFormat(json_schema(rows[0], path) if rows else "messages", "json list")
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a broken row is quarantined later; the format comes from the first good one
        if isinstance(row, dict):
            break
    else:
        return SourceFormat("messages", "jsonl")  # no readable record: each row is set aside as it is read
    return SourceFormat(json_schema(row, path), "jsonl")


def json_schema(row: object, path: Path) -> str:
    """messages / alpaca / sharegpt, from the keys of one record."""
    keys = set(row) if isinstance(row, dict) else set()
    for schema, key in (("messages", "messages"), ("alpaca", "instruction"), ("sharegpt", "conversations")):
        if key in keys:
            return schema
    raise TrainerError(f"{path}: the first record has none of \"messages\", \"instruction\" (Alpaca) or "
                       f"\"conversations\" (ShareGPT); found keys {sorted(keys)}")


def read_json_list(path: Path) -> list:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TrainerError(f"{path}: not a readable JSON list ({error})") from None
    if not isinstance(rows, list):
        raise TrainerError(f"{path}: expected a JSON list of records")
    return rows


def stream_records(path: Path, source_format: SourceFormat, columns: dict[str, str] | None = None) -> Iterator[Record]:
    """Every record of the file, in order, streamed (except a JSON list, read whole)."""
    container = source_format.container
    if container == "json list":
        for number, row in enumerate(read_json_list(path), start=1):
            yield Record(f"{path}:row {number}", json.dumps(row, ensure_ascii=False), row if isinstance(row, dict) else None,
                         None if isinstance(row, dict) else "expected an object")
    elif container == "parquet":
        yield from parquet_records(path)
    elif container == "csv":
        yield from csv_records(path, columns or {})
    else:
        yield from line_records(path, container)


def line_records(path: Path, container: str) -> Iterator[Record]:
    """JSONL or TSV, one line at a time; blank lines (and TSV `#` comments) are not rows."""
    with path.open(encoding="utf-8", errors="strict", newline="") as file:
        number = 0
        while True:
            number += 1
            try:
                line = file.readline()
            except UnicodeDecodeError as error:
                yield Record(f"{path}:{number}", "", None, f"not UTF-8 text ({error.reason})")
                return
            if not line:
                return
            text = line.rstrip("\r\n")
            if not text.strip() or (container == "tsv" and text.lstrip().startswith("#")):
                continue
            where = f"{path}:{number}"
            if container == "tsv":
                prompt, tab, target = text.partition("\t")
                yield Record(where, text, {"prompt": prompt, "target": target} if tab else None,
                             None if tab else "expected `prompt<TAB>target`, found no tab")
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                yield Record(where, text, None, f"invalid JSON ({error.msg} at column {error.colno})")
                continue
            yield Record(where, text, row if isinstance(row, dict) else None,
                         None if isinstance(row, dict) else "expected a JSON object")


def csv_records(path: Path, columns: dict[str, str]) -> Iterator[Record]:
    """CSV with a header; `columns` maps prompt/target onto other header names."""
    prompt_column, target_column = columns.get("prompt", "prompt"), columns.get("target", "target")
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        missing = {prompt_column, target_column} - set(reader.fieldnames or ())
        if missing:
            raise TrainerError(f"{path}: no column {sorted(missing)[0]!r} in the header {reader.fieldnames}; "
                               "name the columns with --columns prompt=COL,target=COL")
        for number, row in enumerate(reader, start=1):
            raw = json.dumps(row, ensure_ascii=False)
            yield Record(f"{path}:row {number}", raw, {"prompt": row[prompt_column] or "", "target": row[target_column] or ""})


def require_pyarrow():
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise TrainerError('reading Parquet needs pyarrow: pip install -e ".[parquet]"') from error
    return parquet


def first_parquet_row(path: Path) -> dict:
    for batch in require_pyarrow().ParquetFile(path).iter_batches(batch_size=1):
        rows = batch.to_pylist()
        if rows:
            return rows[0]
    return {}


def parquet_records(path: Path) -> Iterator[Record]:
    number = 0
    for batch in require_pyarrow().ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield Record(f"{path}:row {number}", json.dumps(row, ensure_ascii=False, default=str), row)


def to_conversation(row: dict, schema: str, where: str) -> Conversation:
    """One record in the guide's schema; a row that does not fit raises TrainerError saying why."""
    if schema == "messages":
        return conversation_from_row(row, where)
    if schema == "alpaca":
        return conversation_from_row(alpaca_messages(row, where) | keep_extras(row), where)
    if schema == "sharegpt":
        tools = sharegpt_tools(row.get("tools"), where)
        return conversation_from_row(keep_extras(row) | sharegpt_messages(row, tools, where), where)
    prompt, target = row.get("prompt"), row.get("target")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TrainerError(f"{where}: the prompt is empty")
    if not isinstance(target, str) or not target.strip():
        raise TrainerError(f"{where}: the target (answer) is empty")
    return conversation_from_row({"messages": [{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": target}]}, where)


def keep_extras(row: dict) -> dict:
    """The guide's optional fields a converted row keeps: tools, id, tags."""
    return {key: row[key] for key in ("tools", "id", "tags") if row.get(key) is not None}


def alpaca_messages(row: dict, where: str) -> dict:
    """{"messages": [system?, (user, assistant) per history pair, user, assistant]} from an Alpaca row."""
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str):
            raise TrainerError(f"{where}: Alpaca rows need a string {key!r}")
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    history = row.get("history") or []
    if not isinstance(history, list) or not all(isinstance(p, list) and len(p) == 2 for p in history):
        raise TrainerError(f"{where}: Alpaca \"history\" must be a list of [instruction, answer] pairs")
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    extra = row.get("input") or ""
    user = row["instruction"] + (ALPACA_INPUT_SEPARATOR + extra if str(extra).strip() else "")
    return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]}


def sharegpt_messages(row: dict, tools: list[dict] | None, where: str) -> dict:
    """{"messages": [...], "tools": ...} from ShareGPT's {"from", "value"} turns, its top-level "system"
    first (when the turns have no system turn of their own), function_call turns as tool calls."""
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise TrainerError(f"{where}: ShareGPT rows need a non-empty \"conversations\" list")
    messages = []
    for index, turn in enumerate(turns):
        speaker = turn.get("from") if isinstance(turn, dict) else None
        if speaker not in SHAREGPT_ROLES:
            raise TrainerError(f"{where}: turn {index}: unknown speaker {speaker!r}; expected one of "
                               f"{', '.join(SHAREGPT_ROLES)}")
        if speaker == "function_call":
            messages.append({"role": "assistant", "content": None,
                             "tool_calls": function_calls(turn.get("value"), tools, f"{where}: turn {index}")})
        else:
            messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    system = row.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages} | ({"tools": tools} if tools else {})


def sharegpt_tools(value: object, where: str) -> list[dict] | None:
    """A ShareGPT row's "tools": a list of tools or a JSON string of one (glaive, LLaMA-Factory); a
    bare function schema {"name", "description", "parameters"} is wrapped as {"type": "function",
    "function": schema}, the form Qwen's function-calling examples pass to the chat template."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise TrainerError(f'{where}: "tools" is a string but not JSON ({error.msg} at column {error.colno})') from None
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise TrainerError(f'{where}: "tools" must be a list of objects, or a JSON string holding one')
    return [tool if "function" in tool else {"type": "function", "function": tool} for tool in value] or None


def function_calls(value: object, tools: list[dict] | None, where: str) -> list[dict]:
    """A function_call turn's value (the JSON of one {"name", "arguments"} call, or of a list of them)
    as tool_calls; a call must name one of the row's tools, and its arguments must be JSON."""
    try:
        calls = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError as error:
        raise TrainerError(f"{where}: function_call is not JSON ({error.msg} at column {error.colno})") from None
    calls = [calls] if isinstance(calls, dict) else calls
    if not isinstance(calls, list) or not calls or not all(isinstance(call, dict) for call in calls):
        raise TrainerError(f'{where}: function_call must be the JSON of a {{"name", "arguments"}} object or a list of them')
    names = [tool["function"].get("name") for tool in tools or [] if isinstance(tool.get("function"), dict)]
    for call in calls:
        if call.get("name") not in names:
            raise TrainerError(f"{where}: function_call names {call.get('name')!r}, which is not among the row's tools "
                               f"({', '.join(map(str, names)) or 'none'})")
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise TrainerError(f"{where}: function_call {call['name']!r} has arguments that are not JSON") from None
        if not isinstance(arguments, dict):
            raise TrainerError(f"{where}: function_call {call['name']!r} arguments must be a JSON object")
        call["arguments"] = arguments
    return [{"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}} for call in calls]
