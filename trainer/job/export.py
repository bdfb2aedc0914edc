"""The job's exports: OUT/adapter (PEFT layout) and OUT/merged (a Hugging Face folder, bf16).

The merge re-reads the ORIGINAL weights from disk and folds each LoRA update into its weight
one tensor at a time (bf16 of original + scale * B A), never the 4-bit ones training ran on. Both
folders are built under temporary names and swapped in together, so OUT never holds a new adapter
beside an old merge; a full disk keeps the previous export as it was.
"""

import shutil
from pathlib import Path

import torch

from ..errors import TrainerError
from ..qwen3.config import Qwen3Config
from ..qwen3.hf_folder import write_model_dir
from ..qwen3.lora import LoraSettings, merged_weight, save_adapter
from ..qwen3.weights import is_out_of_space, load_weights, replace_dirs, space_message


def export(learned: dict[str, torch.Tensor], lora: LoraSettings | None, base_model: str, model_dir: Path,
           config: Qwen3Config, out: Path) -> None:
    """OUT/adapter (LoRA only; `base_model` is what its config names) and OUT/merged; never non-finite
    values. lora None (--method full): `learned` is every weight."""
    broken = [name for name, tensor in learned.items() if not torch.isfinite(tensor).all()]
    if broken:
        raise TrainerError(f"not exporting: non-finite values in {', '.join(broken[:3])}; resume from a checkpoint")
    builds = {}
    if lora is not None:
        builds[out / "adapter"] = lambda d: save_adapter(learned, lora, base_model, d)
        merge = lambda name, w: merged_weight(name, w, learned, lora.scale).to(torch.bfloat16)  # noqa: E731
        merged = load_weights(model_dir, config, torch.float32, "cpu", transform=merge)
    else:
        merged = {name: t.detach().to("cpu", torch.bfloat16) for name, t in learned.items()}
    builds[out / "merged"] = lambda d: write_merged(merged, config, model_dir, d)
    try:
        replace_dirs(builds)  # both built before either is swapped in
    except OSError as error:
        if not is_out_of_space(error):
            raise
        needed = sum(t.numel() * 4 for t in learned.values()) * (lora is not None) + \
            sum(t.numel() * t.element_size() for t in merged.values())
        kept = " and ".join(str(path) for path in builds if path.exists()) or "nothing"
        raise TrainerError(f"{space_message(out, needed, error)}; the previous export is kept as it was ({kept})") from error


def write_merged(weights: dict[str, torch.Tensor], config: Qwen3Config, model_dir: Path, out_dir: Path) -> None:
    """Weights, config and the base model's own tokenizer files (its chat template included)."""
    write_model_dir(weights, config, model_dir / "tokenizer.json", out_dir, dtype="bfloat16")
    if (model_dir / "tokenizer_config.json").is_file():
        shutil.copyfile(model_dir / "tokenizer_config.json", out_dir / "tokenizer_config.json")
