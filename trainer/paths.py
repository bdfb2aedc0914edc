"""Where the project keeps weights on disk (`<repo>/weights`, or $QWEN3_TRAINER_WEIGHTS)."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def weights_dir() -> Path:
    """The folder for downloaded, generated and exported weights; tests point it elsewhere."""
    return Path(os.environ.get("QWEN3_TRAINER_WEIGHTS", REPO_ROOT / "weights"))
