"""Where the project keeps weights on disk (`<repo>/weights`, or $QWEN3_TRAINER_WEIGHTS), and how
every file is written (atomically). No torch here: data preparation imports it."""

import json
import os
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def weights_dir() -> Path:
    """The folder for downloaded, generated and exported weights; tests point it elsewhere."""
    return Path(os.environ.get("QWEN3_TRAINER_WEIGHTS", REPO_ROOT / "weights"))


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp path) beside `path`, then rename over it, so a reader never sees half a file
    (and a write that fails, a full disk say, leaves no temporary file behind)."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_json(path: Path, content: dict) -> None:
    """`content` as indented JSON (non-ASCII text as it is), atomically."""
    text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))
