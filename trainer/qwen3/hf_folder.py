"""A Hugging Face model folder: what transformers, peft, vLLM and llama.cpp's converter read.

    config.json                 the model's shape (trainer.qwen3.config)
    model.safetensors           the weights, under the checkpoint's own names (sharded when large)
    tokenizer.json              the byte-level BPE vocabulary and merges
    tokenizer_config.json       eos / pad tokens and the chat template
    generation_config.json      the token ids generation stops on

The tiny world is written this way, so it loads as a real checkpoint does, and so is OUT/merged.
"""

import json
import shutil
from pathlib import Path

import torch

from ..paths import write_atomic
from ..text.chat import QWEN3_CHAT_TEMPLATE
from .config import Qwen3Config, config_to_json
from .weights import save_weights


def tokenizer_config_json(chat_template: str = QWEN3_CHAT_TEMPLATE) -> dict:
    """The tokenizer_config.json transformers reads: eos/pad tokens and the chat template."""
    return {
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False, "errors": "replace",
        "clean_up_tokenization_spaces": False, "split_special_tokens": False,
        "model_max_length": 262144, "chat_template": chat_template,
    }


def generation_config_json() -> dict:
    return {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643, "do_sample": False}


def write_model_dir(weights: dict[str, torch.Tensor], config: Qwen3Config, tokenizer_json: Path, out_dir: Path,
                    dtype: str = "float32", chat_template: str = QWEN3_CHAT_TEMPLATE) -> None:
    """A Hugging Face model folder: weights, config, tokenizer (with `chat_template`) and generation settings."""
    save_weights(weights, out_dir)
    write_model_files(config, tokenizer_json, out_dir, dtype, chat_template)


def write_model_files(config: Qwen3Config, tokenizer_json: Path, out_dir: Path, dtype: str,
                      chat_template: str = QWEN3_CHAT_TEMPLATE) -> None:
    """Everything of a model folder but its weights: config (`dtype` as its torch_dtype), tokenizer and
    generation settings."""
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    for name, content in (("config.json", config_to_json(config, dtype)),
                          ("tokenizer_config.json", tokenizer_config_json(chat_template)),
                          ("generation_config.json", generation_config_json())):
        text = json.dumps(content, indent=2, ensure_ascii=False)
        write_atomic(out_dir / name, lambda path: path.write_text(text, encoding="utf-8"))
