"""A pure-PyTorch, functional, minimal QLoRA trainer for Qwen3.

The public names follow the data flow: text -> render_chat -> tokenizer -> examples -> batch.
Each is imported from its module on first use, so `import trainer.prep.prepare` (data preparation,
no torch) does not pay for torch's import and memory.
"""

import importlib

PUBLIC = {
    "render_chat": "text.chat",
    "IGNORE_INDEX": "text.data", "Batch": "text.data", "Example": "text.data", "collate": "text.data",
    "example_from_messages": "text.data", "example_from_prompt_target": "text.data",
    "make_next_token_pairs": "text.data", "slice_response_only": "text.data", "window": "text.data",
    "Qwen3Config": "qwen3.config", "load_config": "qwen3.config",
    "TrainerError": "errors",
    "load_model": "job.loading",
    "token_cross_entropy": "training.loss",
    "read_jsonl": "text.readers", "read_samples": "text.readers", "read_tsv": "text.readers",
    "Tokenizer": "text.tokenizer", "load_tokenizer": "text.tokenizer",
    "train_step": "training.train",
    "load_weights": "qwen3.weights",
}
__all__ = sorted(PUBLIC)


def __getattr__(name: str) -> object:
    """`from trainer import X` loads X's module now (PEP 562)."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
