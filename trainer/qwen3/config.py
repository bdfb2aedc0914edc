"""The shape of a Qwen3 dense model, read from a Hugging Face `config.json`.

Only the numbers the forward pass needs are kept. Anything the model functions
do not implement (MoE, sliding windows, RoPE scaling, attention bias) is
rejected when the file is read, so a model never runs with silently wrong maths.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import TrainerError

# Qwen3 tokenizer ids written into exported configs (the model itself never uses them).
BOS_TOKEN_ID = 151643  # <|endoftext|>
EOS_TOKEN_ID = 151645  # <|im_end|>

# Keys that only mixture-of-experts Qwen models carry.
MOE_KEYS = ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step")


@dataclass(frozen=True)
class Qwen3Config:
    """Every size and constant of a Qwen3 dense decoder."""

    vocab_size: int  # rows of the embedding (and of lm_head when untied)
    hidden_size: int  # width H of the residual stream
    intermediate_size: int  # width of the SwiGLU MLP's inner layer
    num_hidden_layers: int  # number of decoder layers
    num_attention_heads: int  # query heads
    num_key_value_heads: int  # key/value heads; query heads share them in groups (GQA)
    head_dim: int  # width D of one head; Qwen3 does not require H == heads * D
    rms_norm_eps: float  # added to the mean square in every RMSNorm
    rope_theta: float  # RoPE base: 1e6 for Qwen3, 5e6 for the 2507 releases
    tie_word_embeddings: bool  # logits use the embedding matrix; no lm_head.weight
    max_position_embeddings: int  # longest context the checkpoint was trained for


TINY = Qwen3Config(
    vocab_size=151936,
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    rms_norm_eps=1e-6,
    rope_theta=5e6,
    tie_word_embeddings=True,
    max_position_embeddings=4096,
)

QWEN3_4B_INSTRUCT_2507 = Qwen3Config(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    rms_norm_eps=1e-6,
    rope_theta=5e6,
    tie_word_embeddings=True,
    max_position_embeddings=262144,
)

QWEN3_0_6B = Qwen3Config(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    rms_norm_eps=1e-6,
    rope_theta=1e6,
    tie_word_embeddings=True,
    max_position_embeddings=40960,
)


def load_config(model_dir: str | Path) -> Qwen3Config:
    """Read `<model_dir>/config.json`, refusing anything the model functions cannot run."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise TrainerError(f"{path}: not found; a model directory needs the Hugging Face config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TrainerError(f"{path}: not valid JSON ({error})") from error
    check_supported(raw, path)
    return config_from_dict(raw, path)


def check_supported(raw: dict, path: Path) -> None:
    """Raise when config.json asks for a feature our forward pass does not implement."""
    if raw.get("model_type") != "qwen3":
        raise TrainerError(f"{path}: model_type is {raw.get('model_type')!r}; only dense 'qwen3' models are supported")
    moe = [key for key in MOE_KEYS if raw.get(key)]
    if moe:
        raise TrainerError(f"{path}: mixture-of-experts keys {moe} found; only dense Qwen3 models are supported")
    if raw.get("hidden_act", "silu") != "silu":
        raise TrainerError(f"{path}: hidden_act is {raw['hidden_act']!r}; Qwen3 uses 'silu'")
    if raw.get("attention_bias"):
        raise TrainerError(f"{path}: attention_bias is true; Qwen3 projections have no bias")
    if raw.get("use_sliding_window"):
        raise TrainerError(f"{path}: use_sliding_window is true; only full attention is supported")
    for key in ("rope_scaling", "rope_parameters"):
        rope_type = rope_type_of(raw.get(key))
        if rope_type != "default":
            raise TrainerError(f"{path}: {key} asks for RoPE type {rope_type!r}; only plain RoPE is supported")


def rope_type_of(rope: dict | None) -> str:
    """The RoPE variant a `rope_scaling`/`rope_parameters` entry names; absent means plain RoPE."""
    if rope is None:
        return "default"
    return rope.get("rope_type", rope.get("type", "default"))


def config_from_dict(raw: dict, path: Path) -> Qwen3Config:
    """Build the dataclass; optional keys take transformers' Qwen3 defaults."""
    missing = [key for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if key not in raw]
    if missing:
        raise TrainerError(f"{path}: missing required keys {missing}")
    heads = raw["num_attention_heads"]
    config = Qwen3Config(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=raw.get("num_key_value_heads") or heads,
        head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta_of(raw, path),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        max_position_embeddings=raw.get("max_position_embeddings", 32768),
    )
    if heads % config.num_key_value_heads:
        raise TrainerError(f"{path}: num_attention_heads {heads} is not a multiple of "
                           f"num_key_value_heads {config.num_key_value_heads}")
    return config


def rope_theta_of(raw: dict, path: Path) -> float:
    """RoPE base from transformers-5 `rope_parameters` or the older top-level `rope_theta`."""
    theta = (raw.get("rope_parameters") or {}).get("rope_theta", raw.get("rope_theta"))
    if theta is None:
        raise TrainerError(f"{path}: no rope_theta (top level or inside rope_parameters)")
    return float(theta)


def config_to_json(config: Qwen3Config, dtype: str = "bfloat16") -> dict:
    """A config.json that transformers' Qwen3ForCausalLM (4.51+ and 5.x) and vLLM load."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,  # read by transformers 4.x
        "rope_scaling": None,
        "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default"},  # read by 5.x
        "tie_word_embeddings": config.tie_word_embeddings,
        "max_position_embeddings": config.max_position_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": config.num_hidden_layers,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "torch_dtype": dtype,  # name used by transformers 4.x
        "dtype": dtype,  # name used by transformers 5.x
    }
