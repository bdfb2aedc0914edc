"""Small data files in the conventions public data sets and APIs publish, with planted bad rows.

Written for these tests (no row is copied from a published set):
- glaive.json: a JSON list of ShareGPT rows as LLaMA-Factory's glaive tool-calling demos lay them
  out: `tools` a JSON string of bare function schemas, `function_call` and `observation` turns;
- openai.jsonl: OpenAI chat rows: content as text parts, a turn weighted out (weight 0, or
  loss_weight 0), tool_call_id, name and id fields;
- alpaca.json: Alpaca rows (instruction, input, output) with a top-level `system`.
Each file also holds rows that must be set aside, one per reason in REJECTED.
"""

import json
from pathlib import Path

TOOLS = [{"name": "count_rows", "description": "Count the rows of a table",
          "parameters": {"type": "object", "properties": {"table": {"type": "string"}}, "required": ["table"]}},
         {"name": "last_load", "description": "When a table was last loaded",
          "parameters": {"type": "object", "properties": {"table": {"type": "string"}}}}]
TABLES = ("orders", "users", "events", "invoices", "clicks", "stock", "refunds", "visits", "payments", "reviews",
          "sessions", "carts")
TOPICS = ("分區", "索引", "快照", "排程", "backfill", "schema", "parquet", "join", "checkpoint", "欄位")


def glaive_row(table: str, calls: list[dict], answer: str) -> dict:
    value = json.dumps(calls[0] if len(calls) == 1 else calls)
    return {"conversations": [{"from": "human", "value": f"How many rows does {table} have, and when was it loaded?"},
                              {"from": "function_call", "value": value},
                              {"from": "observation", "value": json.dumps({"rows": len(table) * 1000})},
                              {"from": "gpt", "value": answer}],
            "system": "You answer questions about the warehouse.", "tools": json.dumps(TOOLS)}


def glaive_rows() -> list[dict]:
    rows = [glaive_row(table, [{"name": "count_rows", "arguments": {"table": table}}]
                       + ([{"name": "last_load", "arguments": {"table": table}}] if n % 2 else []),
                       f"{table} has {len(table) * 1000} rows.") for n, table in enumerate(TABLES)]
    return rows + [glaive_row("orders", [{"name": "drop_table", "arguments": {"table": "orders"}}], "Dropped."),
                   glaive_row("users", [{"name": "count_rows", "arguments": "{table: users}"}], "Counted.")]


def openai_rows() -> list[dict]:
    rows = []
    for n, topic in enumerate(TOPICS):
        wrong = {"role": "assistant", "content": f"{topic} 不重要。", ("weight" if n % 2 else "loss_weight"): 0}
        rows.append({"id": f"chat-{n}", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "你是資料工程助理。"}]},
            {"role": "user", "name": "analyst", "content": [{"type": "text", "text": f"{topic} 要注意什麼？"},
                                                            {"type": "text", "text": "請簡短回答。"}]},
            wrong,
            {"role": "user", "content": "不對，請再想一下。"},
            {"role": "assistant", "content": f"{topic} 要先看資料量再決定。", "weight": 1}]})
    rows.append({"messages": [{"role": "user", "content": "這是什麼表？"},
                              {"role": "assistant", "content": "一張表。", "tool_call_id": "call_1"}]})
    rows.append({"messages": [{"role": "user", "content": [{"type": "text", "text": "圖裡是什麼？"},
                                                           {"type": "image_url", "image_url": {"url": "x.png"}}]},
                              {"role": "assistant", "content": "一張圖。"}]})
    rows.append({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5", "weight": 0}]})
    return rows


def alpaca_rows() -> list[dict]:
    rows = [{"instruction": f"用一句話解釋 {topic}", "input": "", "output": f"{topic} 是資料管線裡的一個步驟。",
             "system": "回答要短。"} for topic in TOPICS]
    return rows + [{"instruction": "解釋 join", "input": "", "output": ""}]


REJECTED = {  # file -> rows set aside, each for its own reason
    "glaive.json": 2,  # a call to a tool the row lacks; arguments that are not JSON
    "openai.jsonl": 2,  # an image part; every answer weighted out (the tool_call_id row is kept)
    "alpaca.json": 1,  # an empty answer
}


def write_public_conventions(folder: Path) -> dict[str, Path]:
    """glaive.json, openai.jsonl and alpaca.json in `folder`; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"glaive.json": json.dumps(glaive_rows(), ensure_ascii=False, indent=1),
             "openai.jsonl": "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in openai_rows()),
             "alpaca.json": json.dumps(alpaca_rows(), ensure_ascii=False, indent=1)}
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return {name.split(".")[0]: folder / name for name in files}
