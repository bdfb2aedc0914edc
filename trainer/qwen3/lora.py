"""LoRA: train two thin matrices per frozen linear instead of the linear itself.

    x [.., in] ──W (frozen, maybe 4-bit)────────────────────────────┐
               └─dropout─> A [r, in] ─> B [out, r] ─> * alpha / r ──┴─> + ─> y [.., out]

A starts random and B starts at zero, so at step 0 the update B A is zero and the model is
exactly the base model. Only A and B get gradients: for Qwen3-4B with r = 16 on all seven
projections that is 33.0M trainable values next to 4.0B frozen ones.

The adapter is a plain dict keyed by PEFT's names (`base_model.model.<module>.lora_A.weight`),
so saving it in PEFT's layout is writing that dict.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..errors import TrainerError
from ..paths import write_atomic
from .config import Qwen3Config
from .model import LoraAdapter, lora_names
from .weights import write_tensors

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16  # rank of the update B A
    alpha: float = 32.0  # the update is scaled by alpha / r
    dropout: float = 0.05  # dropout on the adapter's input while training
    targets: tuple[str, ...] = ALL_PROJECTIONS  # which projections get an adapter

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def target_weight_names(config: Qwen3Config, targets: tuple[str, ...]) -> list[str]:
    """Checkpoint names of the adapted linears, e.g. model.layers.0.self_attn.q_proj.weight."""
    unknown = sorted(set(targets) - set(ALL_PROJECTIONS))
    if unknown:
        raise TrainerError(f"unknown LoRA targets {unknown}; choose from {', '.join(ALL_PROJECTIONS)}")
    names = []
    for layer in range(config.num_hidden_layers):
        for target in targets:
            block = "self_attn" if target in ALL_PROJECTIONS[:4] else "mlp"
            names.append(f"model.layers.{layer}.{block}.{target}.weight")
    return names


def linear_shape(config: Qwen3Config, name: str) -> tuple[int, int]:
    """(out, in) of a projection, from the config alone."""
    hidden, inter = config.hidden_size, config.intermediate_size
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    shapes = {"q_proj": (q_out, hidden), "k_proj": (kv_out, hidden), "v_proj": (kv_out, hidden),
              "o_proj": (hidden, q_out), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
              "down_proj": (hidden, inter)}
    return shapes[name.split(".")[-2]]


def lora_shapes(config: Qwen3Config, settings: LoraSettings) -> dict[str, tuple[int, int]]:
    """PEFT name -> shape of every adapter tensor: A [r, in] and B [out, r]."""
    shapes = {}
    for name in target_weight_names(config, settings.targets):
        out_features, in_features = linear_shape(config, name)
        a_name, b_name = lora_names(name)
        shapes[a_name], shapes[b_name] = (settings.r, in_features), (out_features, settings.r)
    return shapes


def init_lora(config: Qwen3Config, settings: LoraSettings, seed: int, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Fresh float32 adapter tensors: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's default), B = 0."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in lora_shapes(config, settings).items():
        if ".lora_A." in name:
            tensor = (torch.rand(shape, generator=generator) * 2 - 1) / math.sqrt(shape[1])  # [r, in]
        else:
            tensor = torch.zeros(shape)  # [out, r]: the update starts at exactly zero
        tensors[name] = tensor.to(device).requires_grad_()
    return tensors


def make_adapter(tensors: dict[str, Tensor], settings: LoraSettings, training: bool, dtype: torch.dtype,
                 row_seeds: tuple[int, ...] = ()) -> LoraAdapter:
    """The forward-pass view. For inference the tensors are cast to the compute dtype once. While
    training the float32 masters go in as they are (they keep the grads) and `model.linear` casts
    each where it is used, so with activation checkpointing only the layer being recomputed holds
    a compute-dtype copy, not every layer's for the whole step. row_seeds: the batch's dropout seeds,
    made a tensor here, outside any compiled forward, so that a new step's seeds are new data to
    it, not new constants to compile again for."""
    view = tensors if training else {name: t.to(dtype) for name, t in tensors.items()}
    seeds = torch.tensor(row_seeds, dtype=torch.int64)  # [B]
    return LoraAdapter(view, settings.scale, settings.dropout if training else 0.0, training, seeds)


def merged_weight(name: str, weight: Tensor, tensors: dict[str, Tensor], scale: float) -> Tensor:
    """W + B @ A * scale for an adapted weight (computed in float32, cast back); others unchanged."""
    a_name, b_name = lora_names(name)
    if a_name not in tensors:
        return weight
    delta = tensors[b_name].detach().float() @ tensors[a_name].detach().float()  # [out, in]
    return (weight.float() + delta.to(weight.device) * scale).to(weight.dtype)


def adapter_config_json(settings: LoraSettings, base_model: str) -> dict:
    """PEFT's adapter_config.json for these settings, so `PeftModel.from_pretrained` loads it."""
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": settings.r, "lora_alpha": settings.alpha, "lora_dropout": settings.dropout,
        "target_modules": list(settings.targets), "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
    }


def save_adapter(tensors: dict[str, Tensor], settings: LoraSettings, base_model: str, out_dir: Path) -> None:
    """Write adapter_model.safetensors + adapter_config.json (each file atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tensors({name: t.detach().float().cpu() for name, t in tensors.items()}, out_dir / ADAPTER_WEIGHTS)
    text = json.dumps(adapter_config_json(settings, base_model), indent=2)
    write_atomic(out_dir / ADAPTER_CONFIG, lambda path: path.write_text(text, encoding="utf-8"))


def load_adapter(adapter_dir: str | Path) -> tuple[dict[str, Tensor], LoraSettings]:
    """Read a PEFT LoRA adapter folder back into (tensors, settings)."""
    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise TrainerError(f"{path}: not found; an adapter folder holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    if raw.get("peft_type") != "LORA":
        raise TrainerError(f"{config_path}: peft_type must be LORA, found {raw.get('peft_type')!r}")
    listed = raw.get("target_modules") or []
    listed = [listed] if isinstance(listed, str) else list(listed)
    unknown = sorted(set(listed) - set(ALL_PROJECTIONS))
    if unknown:
        raise TrainerError(f"{config_path}: unsupported target_modules {unknown}; expected some of {', '.join(ALL_PROJECTIONS)}")
    targets = tuple(target for target in ALL_PROJECTIONS if target in listed)
    settings = LoraSettings(int(raw["r"]), float(raw["lora_alpha"]), float(raw.get("lora_dropout", 0.0)), targets)
    return load_file(str(weights_path)), settings
