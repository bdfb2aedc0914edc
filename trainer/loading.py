"""Name or folder -> a ready model: config, tokenizer and weights, in one call.

"tiny" is the offline tiny world (built on first use); a local folder is read as is; a hub id
such as Qwen/Qwen3-4B-Instruct-2507 is downloaded into weights/ first.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Qwen3Config, load_config
from .checkpoint import check_tensors
from .lora import load_adapter, lora_shapes, make_adapter
from .model import LoraAdapter, Weights
from .quant import quant_transform
from .tiny import TINY_NAME, ensure_tiny_model
from .tokenizer import Tokenizer, load_tokenizer
from .weights import load_weights, resolve_model_dir


@dataclass(frozen=True)
class LoadedModel:
    folder: Path
    config: Qwen3Config
    tokenizer: Tokenizer
    weights: Weights


def resolve_model(name_or_dir: str) -> Path:
    """"tiny" -> weights/tiny-qwen3 (pre-trained on first use); otherwise a folder or a hub id."""
    return ensure_tiny_model() if name_or_dir == TINY_NAME else resolve_model_dir(name_or_dir)


def load_model(name_or_dir: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu",
               quant: str = "none") -> LoadedModel:
    """Config, tokenizer and weights (linears 4-bit when quant="nf4") of a model folder or name."""
    folder = resolve_model(str(name_or_dir))
    config = load_config(folder)
    weights = load_weights(folder, config, dtype, device, transform=quant_transform(quant))
    return LoadedModel(folder, config, load_tokenizer(folder), weights)


def load_inference_adapter(adapter_dir: str | Path, config: Qwen3Config, dtype: torch.dtype, device: str) -> LoraAdapter:
    """A saved PEFT adapter, checked against the model's shapes, ready for generation (no dropout)."""
    tensors, settings = load_adapter(adapter_dir)
    check_tensors(Path(adapter_dir), tensors, lora_shapes(config, settings), what="adapter")
    return make_adapter({name: t.to(device) for name, t in tensors.items()}, settings, training=False, dtype=dtype)
