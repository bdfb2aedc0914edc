"""Save and resume training so that a resumed run equals an uninterrupted one, bit for bit.

A checkpoint is a folder OUT/checkpoints/step-000040/ holding only tensors and JSON (never a
pickle, so loading one cannot run code):

    trainable.safetensors   the trained tensors (LoRA A/B, or every weight for --method full)
    optimizer.safetensors   AdamW's moments and step count, keyed "<tensor name>.<moment>"
    optimizer.json          AdamW's hyper-parameters
    rng.safetensors         torch's CPU (and CUDA) random-number states: LoRA dropout continues
    state.json              the number of finished steps (it fixes the LR schedule and data order)

It is written under a temporary name and renamed into place, so a crash mid-save leaves the
previous checkpoint intact and no half folder that `--resume` could pick.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..errors import TrainerError
from ..qwen3.weights import is_out_of_space, remove_hidden, replace_dir, save_safetensors, space_message

STEP_FOLDER = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class TrainState:
    """Everything needed to continue training after `step` finished steps."""

    step: int
    trainable: dict[str, Tensor]
    optimizer: dict  # a torch optimizer state_dict
    rng: dict[str, Tensor]


def rng_state() -> dict[str, Tensor]:
    """The random-number states training consumes (dropout): CPU, and each CUDA device."""
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states |= {f"torch_cuda_{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    return states


def restore_rng(states: dict[str, Tensor]) -> None:
    torch.set_rng_state(states["torch_cpu"])
    cuda = [states[key] for key in sorted(states) if key.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer state_dict into named tensors and JSON-able hyper-parameters."""
    state = optimizer.state_dict()
    tensors = {f"{names[index]}.{key}": value.detach().cpu().contiguous()
               for index, moments in state["state"].items() for key, value in moments.items()}
    return tensors, {"param_groups": state["param_groups"], "names": names}


def optimizer_state_dict(tensors: dict[str, Tensor], meta: dict) -> dict:
    """Rebuild a torch optimizer state_dict from optimizer_tensors' two halves."""
    state: dict[int, dict[str, Tensor]] = {}
    for index, name in enumerate(meta["names"]):
        moments = {key[len(name) + 1:]: value for key, value in tensors.items() if key.rsplit(".", 1)[0] == name}
        if moments:
            state[index] = moments
    return {"state": state, "param_groups": meta["param_groups"]}


def write_checkpoint(folder: Path, step: int, trainable: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
    tensors, meta = optimizer_tensors(optimizer, list(trainable))
    save_safetensors({n: t.detach().cpu().contiguous() for n, t in trainable.items()}, folder / "trainable.safetensors")
    save_safetensors(tensors, folder / "optimizer.safetensors")
    (folder / "optimizer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    save_safetensors(rng_state(), folder / "rng.safetensors")
    (folder / "state.json").write_text(json.dumps({"step": step}), encoding="utf-8")


def save_checkpoint(root: Path, step: int, trainable: dict[str, Tensor], optimizer: torch.optim.Optimizer,
                    keep: int) -> Path:
    """Write root/step-NNNNNN atomically, then delete all but the newest `keep` checkpoints."""
    final = root / f"step-{step:06d}"
    try:
        replace_dir(final, lambda folder: write_checkpoint(folder, step, trainable, optimizer))
    except OSError as error:
        if not is_out_of_space(error):
            raise
        newest = list_checkpoints(root)
        needed = 3 * sum(t.numel() * t.element_size() for t in trainable.values())  # tensors + two AdamW moments
        raise TrainerError(f"{space_message(final, needed, error)}; the newest complete checkpoint is "
                           f"{newest[-1] if newest else 'none yet'}") from error
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        doomed = old.with_name(f".deleting-{old.name}")  # hide it first: never a half-deleted step folder
        old.rename(doomed)
        remove_hidden(doomed)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary folders start with '.' and never match)."""
    found = [p for p in root.glob("step-*") if p.is_dir() and STEP_FOLDER.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(STEP_FOLDER.fullmatch(p.name).group(1)))


def resolve_resume(resume: str, root: Path) -> Path:
    """"latest" -> the newest checkpoint under root; otherwise the given folder."""
    if resume != "latest":
        return Path(resume)
    found = list_checkpoints(root)
    if not found:
        raise TrainerError(f"--resume: no checkpoint in {root}; run with --save-every N first")
    return found[-1]


def load_checkpoint(folder: Path, expected: dict[str, tuple[int, ...]]) -> TrainState:
    """Read a checkpoint and check its trained tensors against the names and shapes this run expects."""
    files = ("trainable.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", "state.json")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise TrainerError(f"{folder}: not a checkpoint, missing {', '.join(missing)}")
    try:
        trainable = load_file(str(folder / "trainable.safetensors"))
        optimizer = optimizer_state_dict(load_file(str(folder / "optimizer.safetensors")),
                                         json.loads((folder / "optimizer.json").read_text(encoding="utf-8")))
        rng = load_file(str(folder / "rng.safetensors"))
        step = int(json.loads((folder / "state.json").read_text(encoding="utf-8"))["step"])
    except (SafetensorError, ValueError, KeyError) as error:
        raise TrainerError(f"{folder}: unreadable checkpoint ({error})") from None
    check_tensors(folder, trainable, expected)
    return TrainState(step, trainable, optimizer, rng)


def check_tensors(folder: Path, found: dict[str, Tensor], expected: dict[str, tuple[int, ...]],
                  what: str = "checkpoint") -> None:
    """One error listing missing, unexpected and mis-shaped tensors by name."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [f"{n} {tuple(found[n].shape)} (expected {expected[n]})"
                 for n in sorted(set(found) & set(expected)) if tuple(found[n].shape) != tuple(expected[n])]
    problems = [f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
    if problems:
        raise TrainerError(f"{folder}: {what} does not match this model and settings; " + "; ".join(problems))
