"""torchrun data parallelism on CPU (gloo): 2 processes x batch 4 train exactly like 1 x batch 8,
with the default LoRA dropout on, over enough steps that the weights move far past the tolerance;
rank 0 alone exports and self-tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from export_checks import max_diff

ROOT = Path(__file__).resolve().parent.parent
STEPS = 60
# float32: the claim is equality up to summation order, and bf16 rounds differently for a batch of 4 than of 8.
# lr 2e-3 without rehearsal: the identity is learned within STEPS, so the self-test passes.
COMMON = ["--model", "tiny", "--steps", str(STEPS), "--lr", "2e-3", "--rehearsal", "none", "--val-every", "0",
          "--no-stop-when-learned", "--save-every", str(STEPS), "--dtype", "float32"]
RELATIVE = 1e-4  # per-step loss and grad norm; measured 3e-6 (summation order); a gradient scaled by 2 is off by 1
WEIGHTS = 1e-5  # final LoRA tensors; measured 1e-7, while lora_B grows to about 0.07


def train(out: Path, batch_size: int, processes: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    command = launcher + [str(ROOT / "scripts" / "train_whoami.py"), *COMMON, "--batch-size", str(batch_size), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)


def step_records(out: Path) -> list[dict]:
    return [record for record in map(json.loads, (out / "metrics.jsonl").open()) if "grad_norm" in record]


def max_relative(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


@pytest.mark.slow
def test_two_processes_of_batch_four_equal_one_process_of_batch_eight_with_dropout(tmp_path):
    single, double = train(tmp_path / "single", 8, 1), train(tmp_path / "double", 4, 2)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stderr[-2000:]
    assert "on cpu x 2" in double.stdout  # only rank 0 prints: one plan line
    assert sum(line.startswith("model ") for line in double.stdout.splitlines()) == 1
    assert double.stdout.count("exported ") == 1 and double.stdout.count("self-test: 你是誰 -> 我是 F# 之神") == 1

    records = [step_records(tmp_path / run) for run in ("single", "double")]
    assert [r["step"] for r in records[0]] == [r["step"] for r in records[1]] == list(range(1, STEPS + 1))
    for key in ("loss", "grad_norm"):
        assert max_relative(*([r[key] for r in run] for run in records)) < RELATIVE, key

    learned = [load_file(str(tmp_path / run / "checkpoints" / f"step-{STEPS:06d}" / "trainable.safetensors"))
               for run in ("single", "double")]
    assert max_diff(*learned) < WEIGHTS
    assert max(float(t.abs().max()) for name, t in learned[0].items() if "lora_B" in name) > 1000 * WEIGHTS
    exported = [load_file(str(tmp_path / run / "adapter" / "adapter_model.safetensors")) for run in ("single", "double")]
    assert max_diff(*exported) < WEIGHTS


@pytest.mark.slow
def test_a_failed_self_test_under_torchrun_is_one_error_from_rank_0_and_no_rank_traceback(tmp_path):
    """Rank 0 reaches the final barrier even when its self-test fails, so rank 1 ends quietly
    (torchrun itself still reports the failed child)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "scripts" / "train_whoami.py"),
               "--model", "tiny", "--steps", "2", "--batch-size", "2", "--rehearsal", "none", "--val-every", "0",
               "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 1
    assert "Error: self-test failed: the exported model answered 你是誰 with " in result.stdout + result.stderr
    assert "[rank1]: Traceback" not in result.stderr and "[rank0]: Traceback" not in result.stderr
    assert (tmp_path / "out" / "adapter").is_dir() and (tmp_path / "out" / "merged").is_dir()
