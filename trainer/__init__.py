"""A pure-PyTorch, functional, minimal QLoRA trainer for Qwen3.

The public names follow the data flow: text -> render_chat -> tokenizer -> examples -> batch.
"""

from .chat import render_chat
from .data import (
    IGNORE_INDEX,
    Batch,
    Example,
    collate,
    example_from_messages,
    example_from_prompt_target,
    make_next_token_pairs,
    slice_response_only,
    window,
)
from .config import Qwen3Config, load_config
from .errors import TrainerError
from .loading import load_model
from .loss import token_cross_entropy
from .readers import read_jsonl, read_samples, read_tsv
from .tokenizer import Tokenizer, load_tokenizer
from .train import train_step
from .weights import load_weights

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "Example",
    "Qwen3Config",
    "Tokenizer",
    "TrainerError",
    "collate",
    "example_from_messages",
    "example_from_prompt_target",
    "load_config",
    "load_model",
    "load_tokenizer",
    "load_weights",
    "make_next_token_pairs",
    "read_jsonl",
    "read_samples",
    "read_tsv",
    "render_chat",
    "slice_response_only",
    "token_cross_entropy",
    "train_step",
    "window",
]
