"""End-to-end runs of the command-line scripts, as a user would type them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, timeout=300
    )


def test_show_example_prints_the_graded_answer():
    result = run_script("show_example.py", "--prompt", "你是誰", "--target", "我是 F# 之神")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "<|im_start|>assistant" in lines
    assert lines[-1] == "16 positions, 7 graded answer tokens"
    assert "   9  '\\n'" in result.stdout and "'我是'" in result.stdout
    assert sum("yes (answer)" in line for line in lines) == 7


def test_show_example_user_error_is_one_line_without_traceback():
    result = run_script("show_example.py", "--seq-len", "3")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: the answer has 7 tokens (with <|im_end|>) but --seq-len is 3"
    assert "Traceback" not in result.stderr
