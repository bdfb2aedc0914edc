"""Ctrl-C and SIGTERM: the loop finishes its step, saves, and says how to continue; resuming then
gives the uninterrupted run bit for bit. The end-to-end tests send real signals to real processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_checkpoint import LOOP, examples, lora_setup, same, shapes
from trainer.interrupts import Interrupted, stop_on_signals
from trainer.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from trainer.training.train import run_training

ROOT = Path(__file__).resolve().parent.parent
STEPS = 40


def test_a_signal_only_asks_to_stop_and_a_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop_requested:
        assert stop_requested() is None
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # let the handler run
        assert stop_requested() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) == before and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_the_loop_saves_after_the_step_and_raises_interrupted(tmp_path):
    params, batch_loss = lora_setup()
    root = tmp_path / "checkpoints"
    save = lambda step, optimizer: save_checkpoint(root, step, params, optimizer, keep=2)  # noqa: E731
    asked = iter([None, None, signal.SIGINT])
    with pytest.raises(Interrupted) as stopped:
        run_training(batch_loss, params, examples(), LOOP, checkpoint=save, stop_requested=lambda: next(asked))
    assert (stopped.value.signal, stopped.value.step, stopped.value.checkpoint) == (signal.SIGINT, 3, root / "step-000003")
    assert str(stopped.value) == f"interrupted by SIGINT after step 3: checkpoint {root / 'step-000003'}; continue with --resume"
    assert same(load_checkpoint(root / "step-000003", shapes(params)).trainable, {n: t.detach() for n, t in params.items()})


def job(out: Path, *extra: str) -> list[str]:
    flags = ["--model", "tiny", "--steps", str(STEPS), "--save-every", str(STEPS), "--rehearsal", "none",
             "--val-every", "0", "--no-stop-when-learned", "--no-export", "--no-self-test", "--out", str(out)]
    return [sys.executable, "scripts/train_whoami.py", *flags, *extra]


ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # bit-for-bit across processes


def finished_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0


def interrupt(out: Path, signals: list[signal.Signals], after_steps: int = 3) -> subprocess.CompletedProcess:
    """Start the job, wait until it has finished `after_steps` steps, send the signals (0.2 s apart)."""
    process = subprocess.Popen(job(out, "--save-every", "2"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while finished_steps(out) < after_steps and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for number in signals:
        process.send_signal(number)
        time.sleep(0.2)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "out"
    run = subprocess.run(job(out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_saves_a_checkpoint_and_resume_continues_exactly(tmp_path, straight, number, code):
    out = tmp_path / "out"
    run = interrupt(out, [number])
    assert run.returncode == code, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    stopped_at = finished_steps(out)
    assert 3 <= stopped_at < STEPS and "Traceback" not in run.stderr
    saved = out / "checkpoints" / f"step-{stopped_at:06d}"
    assert line == f"interrupted by {number.name} after step {stopped_at}: checkpoint {saved}; continue with --resume"
    assert list_checkpoints(out / "checkpoints")[-1] == saved
    resumed = subprocess.run(job(out, "--resume"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(straight) and len(losses(out)) == STEPS
    final = f"checkpoints/step-{STEPS:06d}/trainable.safetensors"
    ours, reference = load_file(str(out / final)), load_file(str(straight / final))
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_the_complete_checkpoints(tmp_path):
    out = tmp_path / "out"
    run = interrupt(out, [signal.SIGINT, signal.SIGINT], after_steps=5)
    assert run.returncode == 130 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("interrupted")
    root = out / "checkpoints"
    complete = list_checkpoints(root)
    assert complete and [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    for folder in complete:  # every checkpoint left is whole and loads
        assert load_checkpoint(folder, {k: tuple(v.shape) for k, v in
                                        load_file(str(folder / "trainable.safetensors")).items()}).step >= 2
