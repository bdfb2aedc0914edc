"""torchrun data parallelism on CPU (gloo): N processes x batch b train exactly like 1 x batch N*b."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
# float32: the claim is equality within 1e-5, and bf16 rounds differently for a batch of 2 than of 4.
COMMON = ["--model", "tiny", "--steps", "4", "--lr", "2e-4", "--lora-dropout", "0", "--save-every", "4",
          "--no-export", "--no-self-test", "--dtype", "float32"]


def train(out: Path, batch_size: int, processes: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    command = launcher + [str(ROOT / "scripts" / "train_whoami.py"), *COMMON, "--batch-size", str(batch_size), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_two_processes_of_batch_two_equal_one_process_of_batch_four(tmp_path):
    single, double = train(tmp_path / "single", 4, 1), train(tmp_path / "double", 2, 2)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stderr[-2000:]
    assert "on cpu x 2" in double.stdout and double.stdout.count("model ") == 1  # only rank 0 prints

    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").open()] for run in ("single", "double")]
    assert len(losses[0]) == len(losses[1]) == 4
    assert max(abs(a - b) for a, b in zip(*losses)) < 1e-5

    weights = [load_file(str(tmp_path / run / "checkpoints" / "step-000004" / "trainable.safetensors"))
               for run in ("single", "double")]
    assert weights[0].keys() == weights[1].keys()
    assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]) < 1e-5
    assert max(float(weights[0][k].abs().max()) for k in weights[0] if "lora_B" in k) > 1e-4  # B really moved
