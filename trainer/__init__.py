"""A pure-PyTorch, functional, minimal QLoRA trainer for Qwen3.

The public names follow the data flow: text -> render_chat -> tokenizer -> examples -> batch.
Each is imported from its module on first use, so `import trainer.prepare` (data preparation,
no torch) does not pay for torch's import and memory.
"""

import importlib

PUBLIC = {
    "render_chat": "chat",
    "IGNORE_INDEX": "data", "Batch": "data", "Example": "data", "collate": "data",
    "example_from_messages": "data", "example_from_prompt_target": "data",
    "make_next_token_pairs": "data", "slice_response_only": "data", "window": "data",
    "Qwen3Config": "config", "load_config": "config",
    "TrainerError": "errors",
    "load_model": "loading",
    "token_cross_entropy": "loss",
    "read_jsonl": "readers", "read_samples": "readers", "read_tsv": "readers",
    "Tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "train_step": "train",
    "load_weights": "weights",
}
__all__ = sorted(PUBLIC)


def __getattr__(name: str) -> object:
    """`from trainer import X` loads X's module now (PEP 562)."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
