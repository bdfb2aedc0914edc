"""Checkpoints: atomic saves, pruning, strict loading, exact resume, and skipping non-finite steps.

Unit tests use a tiny random Qwen3 (fast); the CLI resume test runs the real script (slow).
"""

import errno
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainer.training.checkpoint as checkpoint
from trainer.errors import TrainerError
from trainer.job.tiny import random_weights
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3.lora import LoraSettings, init_lora
from trainer.text.data import Example
from trainer.training.checkpoint import list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint
from trainer.training.loss import LossParts
from trainer.training.train import LoopSettings, lora_batch_loss, run_training

ROOT = Path(__file__).resolve().parent.parent
IGNORE = -100
SMALL = Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                    rope_theta=1e4, tie_word_embeddings=True, max_position_embeddings=128)
ANSWER = (17, 42, 99, 5)
LOOP = LoopSettings(steps=6, batch_size=2, grad_accum=1, lr=1e-2, warmup_steps=1, grad_clip=1.0,
                    weight_decay=0.0, seed=7, pad_id=0, save_every=1, max_skips=2)


def examples(count: int = 8) -> list[Example]:
    """Random prompts of 3..6 tokens followed by ANSWER; labels only on the answer."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(count):
        prompt = torch.randint(1, SMALL.vocab_size, (3 + i % 4,), generator=generator).tolist()
        full = prompt + list(ANSWER)
        rows.append(Example(tuple(full[:-1]), tuple([IGNORE] * (len(prompt) - 1) + list(ANSWER))))
    return rows


def lora_setup(dropout: float = 0.0):
    """A frozen random base and fresh LoRA tensors (float32) with their batch loss."""
    settings = LoraSettings(r=4, alpha=8.0, dropout=dropout)
    weights = random_weights(SMALL, 1)
    weights["model.embed_tokens.weight"] *= 10
    tensors = init_lora(SMALL, settings, seed=2)
    return tensors, lora_batch_loss(weights, SMALL, tensors, settings, torch.float32, ce_chunk=7)


def poisoned(batch_loss, params: dict[str, torch.Tensor], bad: Callable[[int], bool], how: str = "nan"):
    """Wrap a batch loss so the calls where bad(call number, 1-based) blow up.

    "nan": the loss is NaN. "inf_grad_norm": the loss value is unchanged, but every gradient entry
    gets + 3e37 (finite), so the total gradient norm overflows to inf.
    """
    calls = [0]

    def wrapped(batch, normalizer):
        calls[0] += 1
        parts = batch_loss(batch, normalizer)
        if not bad(calls[0]):
            return parts
        if how == "nan":
            return LossParts(parts.loss * float("nan"), parts.correct, parts.count)
        bump = sum(((p - p.detach()) * 3e37).sum() for p in params.values())  # value 0, gradient 3e37
        return LossParts(parts.loss + bump, parts.correct, parts.count)

    return wrapped


def snapshot(params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict:
    """Clones of every trained tensor and every AdamW moment (step count included)."""
    moments = {f"{i}.{key}": value.clone() for i, state in optimizer.state_dict()["state"].items()
               for key, value in state.items()}
    return {"params": {n: t.detach().clone() for n, t in params.items()}, "moments": moments}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def record_steps(params, batch_loss, settings=LOOP, checkpointer_root: Path | None = None):
    """Run the loop, returning (results, {finished step: snapshot}) via the checkpoint callback."""
    snapshots = {0: {"params": {n: t.detach().clone() for n, t in params.items()}, "moments": {}}}

    def checkpointer(step, optimizer):
        snapshots[step] = snapshot(params, optimizer)
        return save_checkpoint(checkpointer_root, step, params, optimizer, keep=10) if checkpointer_root else None

    results = run_training(batch_loss, params, examples(), settings, checkpoint=checkpointer)
    return results, snapshots


def adamw_with_state(params: dict[str, torch.Tensor]) -> torch.optim.AdamW:
    """An AdamW that has taken two steps, so it has moments and a step count to save."""
    optimizer = torch.optim.AdamW(list(params.values()), lr=0.1)
    for k in range(2):
        for t in params.values():
            t.grad = torch.full_like(t, 0.5 + k)
        optimizer.step()
    return optimizer


def toy_params() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6.0).reshape(2, 3).requires_grad_(),
            "b.weight": torch.linspace(-1, 1, 4).requires_grad_()}


def shapes(params: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in params.items()}


# ---------------------------------------------------------------------------
# Save, load, prune
# ---------------------------------------------------------------------------


def test_save_then_load_round_trips_tensors_moments_step_and_rng(tmp_path):
    params = toy_params()
    optimizer = adamw_with_state(params)
    torch.manual_seed(99)
    rng_before = torch.get_rng_state()
    folder = save_checkpoint(tmp_path, 12, params, optimizer, keep=2)
    assert folder == tmp_path / "step-000012"
    assert sorted(p.name for p in folder.iterdir()) == [
        "optimizer.json", "optimizer.safetensors", "rng.safetensors", "state.json", "trainable.safetensors"]

    state = load_checkpoint(folder, shapes(params))
    assert state.step == 12
    assert same(state.trainable, {n: t.detach() for n, t in params.items()})
    assert torch.equal(state.rng["torch_cpu"], rng_before)
    fresh = torch.optim.AdamW([torch.zeros_like(t, requires_grad=True) for t in params.values()], lr=0.1)
    fresh.load_state_dict(state.optimizer)
    original = optimizer.state_dict()
    for index in (0, 1):
        assert same(fresh.state_dict()["state"][index], original["state"][index])
    assert float(original["state"][0]["step"]) == 2.0


def test_keep_last_k_prunes_the_oldest_and_leaves_no_leftovers(tmp_path):
    params = toy_params()
    optimizer = adamw_with_state(params)
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path, step, params, optimizer, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004", "step-000005"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004", "step-000005"]
    assert resolve_resume("latest", tmp_path) == tmp_path / "step-000005"


def test_list_checkpoints_orders_by_step_number_and_ignores_others(tmp_path):
    for name in ("step-000010", "step-000009", "step-100000", ".step-000011-abc", "step-12x", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "step-000013").write_text("a file, not a folder")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000009", "step-000010", "step-100000"]


def test_a_save_killed_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    params = toy_params()
    optimizer = adamw_with_state(params)
    good = save_checkpoint(tmp_path, 1, params, optimizer, keep=2)
    saved_a = params["a.weight"].detach().clone()
    good_files = {p.name: p.read_bytes() for p in good.iterdir()}

    real_save, written = checkpoint.save_safetensors, []

    def dies_after_one_file(tensors, path, *args, **kwargs):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path, *args, **kwargs)
        written.append(path)

    monkeypatch.setattr(checkpoint, "save_safetensors", dies_after_one_file)
    with torch.no_grad():
        params["a.weight"].add_(100.0)
    with pytest.raises(TrainerError) as error:  # one line: the folder, the space it needed, what is kept
        save_checkpoint(tmp_path, 2, params, optimizer, keep=2)
    assert str(error.value).startswith(f"no space to write {tmp_path / 'step-000002'}: it needs about 0.0 MB, ")
    assert str(error.value).endswith(f"(No space left on device); the newest complete checkpoint is {good}")
    assert len(written) == 1 and Path(written[0]).name == "trainable.safetensors"

    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["step-000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]  # the temporary folder was removed too
    assert {p.name: p.read_bytes() for p in good.iterdir()} == good_files
    assert list_checkpoints(tmp_path) == [good]
    assert resolve_resume("latest", tmp_path) == good
    state = load_checkpoint(good, shapes(params))
    assert state.step == 1
    assert torch.equal(state.trainable["a.weight"], saved_a)


def test_a_hard_killed_save_leaves_only_a_hidden_folder_that_resume_never_picks(tmp_path):
    params = toy_params()
    good = save_checkpoint(tmp_path, 4, params, adamw_with_state(params), keep=2)
    partial = tmp_path / ".step-000008-x1y2"  # what replace_dir's temporary folder looks like after SIGKILL
    partial.mkdir()
    (partial / "trainable.safetensors").write_bytes(b"half")
    assert list_checkpoints(tmp_path) == [good]
    assert resolve_resume("latest", tmp_path) == good


def test_resolve_resume_latest_without_checkpoints_says_to_use_save_every(tmp_path):
    with pytest.raises(TrainerError, match="--save-every") as error:
        resolve_resume("latest", tmp_path / "checkpoints")
    assert str(tmp_path / "checkpoints") in str(error.value)
    assert resolve_resume("some/folder", tmp_path) == Path("some/folder")


def test_load_names_missing_unexpected_and_misshaped_tensors_in_one_error(tmp_path):
    params = toy_params()
    folder = save_checkpoint(tmp_path, 3, params, adamw_with_state(params), keep=2)
    expected = {"a.weight": (3, 2), "c.weight": (1,)}  # a: other shape, b: not expected, c: not saved
    with pytest.raises(TrainerError) as error:
        load_checkpoint(folder, expected)
    message = str(error.value)
    assert message.startswith(f"{folder}: checkpoint does not match this model and settings")
    assert "missing: c.weight" in message
    assert "unexpected: b.weight" in message
    assert "mis-shaped: a.weight (2, 3) (expected (3, 2))" in message


@pytest.mark.parametrize("content", [{}, {"state.json": '{"step": 3}', "trainable.safetensors": "x"}])
def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path, content):
    for name, text in content.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(TrainerError, match="not a checkpoint, missing") as error:
        load_checkpoint(tmp_path, {"a.weight": (2, 3)})
    assert "optimizer.safetensors" in str(error.value) and "rng.safetensors" in str(error.value)


def test_a_corrupt_checkpoint_file_is_a_trainer_error(tmp_path):
    params = toy_params()
    folder = save_checkpoint(tmp_path, 3, params, adamw_with_state(params), keep=2)
    (folder / "trainable.safetensors").write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(TrainerError, match="unreadable checkpoint"):
        load_checkpoint(folder, shapes(params))


# ---------------------------------------------------------------------------
# Non-finite steps
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["nan", "inf_grad_norm"])
def test_a_non_finite_step_is_skipped_and_leaves_weights_and_moments_untouched(how):
    params, batch_loss = lora_setup()
    results, snaps = record_steps(params, poisoned(batch_loss, params, lambda call: call == 3, how))

    assert [r.skipped for r in results] == [False, False, True, False, False, False]
    bad = results[2]
    if how == "nan":
        assert math.isnan(bad.loss) and bad.scrubbed > 0
    else:
        assert math.isfinite(bad.loss) and bad.grad_norm == math.inf
    assert same(snaps[3]["params"], snaps[2]["params"])
    assert same(snaps[3]["moments"], snaps[2]["moments"])
    for step in (1, 2, 4, 5, 6):
        changed = [n for n in params if not torch.equal(snaps[step]["params"][n], snaps[step - 1]["params"][n])]
        assert changed, f"step {step} changed no LoRA tensor"
    for step in (4, 5, 6):  # every tensor moves once B is non-zero
        assert all(not torch.equal(snaps[step]["params"][n], snaps[step - 1]["params"][n]) for n in params)
    assert all(torch.isfinite(t).all() for t in params.values())
    assert float(snaps[6]["moments"]["0.step"]) == 5.0  # five real AdamW steps


def test_max_skips_in_a_row_stops_with_the_saved_checkpoint_path(tmp_path):
    params, batch_loss = lora_setup()
    root = tmp_path / "checkpoints"
    with pytest.raises(TrainerError) as error:
        record_steps(params, poisoned(batch_loss, params, lambda call: call >= 3), checkpointer_root=root)
    message = str(error.value)
    assert "stopped at step 4: 2 steps in a row" in message
    assert f"saved in {root / 'step-000004'}" in message
    saved = load_checkpoint(root / "step-000004", shapes(params))
    good = load_checkpoint(root / "step-000002", shapes(params))
    assert saved.step == 4
    assert same(saved.trainable, good.trainable)  # the last good weights


def test_max_skips_without_a_checkpointer_names_no_folder():
    params, batch_loss = lora_setup()
    with pytest.raises(TrainerError, match="in a row") as error:
        run_training(poisoned(batch_loss, params, lambda call: True), params, examples(), LOOP)
    assert "stopped at step 2" in str(error.value) and "saved in" not in str(error.value)


# ---------------------------------------------------------------------------
# Exact resume (unit level, with dropout so the random state matters)
# ---------------------------------------------------------------------------


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    settings = LoopSettings(**{**LOOP.__dict__, "save_every": 0, "max_skips": 10})
    torch.manual_seed(5)
    params, batch_loss = lora_setup(dropout=0.3)
    straight = [r.loss for r in run_training(batch_loss, params, examples(), settings)]
    final = {n: t.detach().clone() for n, t in params.items()}

    torch.manual_seed(5)
    params, batch_loss = lora_setup(dropout=0.3)
    root = tmp_path / "checkpoints"
    save = lambda step, optimizer: save_checkpoint(root, step, params, optimizer, keep=2)  # noqa: E731
    stopped = LoopSettings(**{**settings.__dict__, "stop_after": 3})
    first = [r.loss for r in run_training(batch_loss, params, examples(), stopped, checkpoint=save)]
    assert [p.name for p in list_checkpoints(root)] == ["step-000003"]

    torch.manual_seed(123)  # a new process starts from another random state
    params, batch_loss = lora_setup(dropout=0.3)
    state = load_checkpoint(resolve_resume("latest", root), shapes(params))
    second = [r.loss for r in run_training(batch_loss, params, examples(), settings, resume=state)]
    assert first + second == straight
    assert same({n: t.detach() for n, t in params.items()}, final)


# ---------------------------------------------------------------------------
# The real CLI: stop after 4 steps, resume, and get the uninterrupted run bit for bit
# ---------------------------------------------------------------------------


def train_cli(*args: str) -> subprocess.CompletedProcess:
    flags = ["--model", "tiny", "--steps", "8", "--save-every", "4", "--no-export", "--no-self-test"]
    # One thread: a multi-threaded BLAS may split its sums differently when the machine is busy,
    # and this test compares separate processes bit for bit.
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "scripts/train_whoami.py", *flags, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def losses(out: Path) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [(record["step"], record["loss"]) for record in map(json.loads, lines)]


def final_adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "step-000008" / "trainable.safetensors"))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_cli_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    a, b, d = tmp_path / "A", tmp_path / "B", tmp_path / "D"
    run = train_cli("--out", str(a))
    assert run.returncode == 0, run.stderr

    run = train_cli("--stop-after", "4", "--out", str(b))
    assert run.returncode == 0, run.stderr
    assert "stopped after step 4; continue with --resume" in run.stdout
    assert [p.name for p in list_checkpoints(b / "checkpoints")] == ["step-000004"]
    assert [step for step, _ in losses(b)] == [1, 2, 3, 4]

    run = train_cli("--resume", "--out", str(b))
    assert run.returncode == 0, run.stderr
    assert len(losses(a)) == 8 and [step for step, _ in losses(a)] == list(range(1, 9))
    assert losses(b) == losses(a)
    assert max_abs_diff(final_adapter(a), final_adapter(b)) == 0.0

    run = train_cli("--resume", str(b / "checkpoints" / "step-000004"), "--out", str(d))
    assert run.returncode == 0, run.stderr
    assert losses(d) == losses(a)[4:]
    assert max_abs_diff(final_adapter(a), final_adapter(d)) == 0.0
