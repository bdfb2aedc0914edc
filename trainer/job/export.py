"""The job's exports: OUT/adapter (PEFT layout) and OUT/merged (a Hugging Face folder, bf16), and the
check that merged/ is what it claims to be.

The merge re-reads the ORIGINAL weights from disk and folds each LoRA update into its weight
one tensor at a time (bf16 of original + scale * B A), never the 4-bit ones training ran on.
merged/ is written one shard at a time (MERGED_SHARD_BYTES), so the export holds at most one
shard beside the training model, never a dense copy of the whole base. Both folders are built
under temporary names and swapped in together, so OUT never holds a new adapter beside an old
merge; a full disk keeps the previous export as it was.
"""

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import TrainerError
from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config
from ..qwen3.hf_folder import write_model_files
from ..qwen3.lora import LoraSettings, merged_weight, save_adapter
from ..qwen3.weights import (checkpoint_files, expected_shapes, is_out_of_space, read_tensor, replace_dirs,
                             space_message, write_weights)

MERGED_SHARD_BYTES = 10**9  # merged/ shard size: the most of it held in memory at once (the 4B shape: 9 files)

MakeTensor = Callable[[str], torch.Tensor]  # name -> that tensor of merged/


def merged_tensors(learned: dict[str, torch.Tensor], lora: LoraSettings | None, model_dir: Path,
                   config: Qwen3Config) -> MakeTensor:
    """What merged/ holds, one tensor at a time: bf16 of (the original weight re-read from
    `model_dir` + scale * B @ A) for an adapted weight, bf16 of the original for the rest; with lora
    None (--method full), bf16 of the learned weight itself."""
    if lora is None:
        return lambda name: learned[name].detach().to("cpu", torch.bfloat16)
    files = checkpoint_files(model_dir, config)  # every name and shape checked before the first is merged
    return lambda name: merged_weight(name, read_tensor(files[name], name, None, "cpu"), learned,
                                      lora.scale).to(torch.bfloat16)


def merged_layout(config: Qwen3Config) -> dict[str, torch.Tensor]:
    """merged/'s tensors as meta tensors: every name and shape of `config`, bf16, no data."""
    return {name: torch.empty(shape, dtype=torch.bfloat16, device="meta")
            for name, shape in expected_shapes(config).items()}


def export(learned: dict[str, torch.Tensor], lora: LoraSettings | None, base_model: str, model_dir: Path,
           config: Qwen3Config, out: Path, progress: Progress = no_progress) -> None:
    """OUT/adapter (LoRA only; `base_model` is what its config names) and OUT/merged; never non-finite
    values. lora None (--method full): `learned` is every weight. progress(1) per merged tensor."""
    broken = [name for name, tensor in learned.items() if not torch.isfinite(tensor).all()]
    if broken:
        raise TrainerError(f"not exporting: non-finite values in {', '.join(broken[:3])}; resume from a checkpoint")
    builds = {}
    if lora is not None:
        builds[out / "adapter"] = lambda d: save_adapter(learned, lora, base_model, d)
    make = merged_tensors(learned, lora, model_dir, config)
    builds[out / "merged"] = lambda d: write_merged(make, config, model_dir, d, progress)
    try:
        replace_dirs(builds)  # both built before either is swapped in
    except OSError as error:
        if not is_out_of_space(error):
            raise
        needed = sum(t.numel() * 4 for t in learned.values()) * (lora is not None) + \
            sum(t.numel() * 2 for t in merged_layout(config).values())
        kept = " and ".join(str(path) for path in builds if path.exists()) or "nothing"
        raise TrainerError(f"{space_message(out, needed, error)}; the previous export is kept as it was ({kept})") from error


def write_merged(make: MakeTensor, config: Qwen3Config, model_dir: Path, out_dir: Path,
                 progress: Progress = no_progress) -> None:
    """Weights (made and written shard by shard), config and the base model's own tokenizer files
    (its chat template included, in tokenizer_config.json or chat_template.jinja)."""
    write_weights(merged_layout(config), make, out_dir, MERGED_SHARD_BYTES, progress)
    write_model_files(config, model_dir / "tokenizer.json", out_dir, dtype="bfloat16")
    for name in ("tokenizer_config.json", "chat_template.jinja"):  # the base's own template, unchanged
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)


def check_merged(merged_dir: Path, make: MakeTensor, config: Qwen3Config, progress: Progress = no_progress) -> None:
    """merged/ checked tensor by tensor against its definition (`make`, see merged_tensors), streamed:
    one tensor of each in memory at a time. Every name and shape, then every value, bit for bit."""
    for name, path in checkpoint_files(merged_dir, config).items():
        stored = read_tensor(path, name, None, "cpu")
        if stored.dtype != torch.bfloat16 or not torch.equal(stored, make(name)):
            raise TrainerError(f"{merged_dir}: {name} differs from its definition (bf16 of the original weight "
                               f"+ scale * B @ A, or of the learned weight); the merged export is damaged")
        progress(1)
