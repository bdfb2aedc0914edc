"""Fixtures shared across test files."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.text.tokenizer import Tokenizer, load_tokenizer


@pytest.fixture(scope="session")
def qwen_tokenizer() -> Tokenizer:
    """The real Qwen3 tokenizer, built offline once and cached under weights/."""
    return load_tokenizer("tiny")


@pytest.fixture
def hf_qwen3(tmp_path):
    """Factory: a random transformers Qwen3ForCausalLM (float32, eager attention) saved under tmp_path.

    `build(name, seed=0, max_shard_size=None, **config)` returns (model, directory). Weights
    get std 0.08 and norm weights uniform in [0.5, 1.5], so parity tests are not trivially
    passed by near-zero activations or all-ones norms. transformers is imported lazily
    because only the parity tests need it.
    """

    def build(name: str, seed: int = 0, max_shard_size: str | None = None, **config):
        from transformers import Qwen3Config as HFQwen3Config, Qwen3ForCausalLM

        settings = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, max_position_embeddings=512, attn_implementation="eager")
        model = Qwen3ForCausalLM(HFQwen3Config(**(settings | config))).eval()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim == 1:  # RMSNorm weights
                    param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.08)
        directory = tmp_path / name
        model.save_pretrained(directory, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
        return model, directory

    return build


@pytest.fixture(scope="session")
def readme_job(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(OUT, the finished process) of the README's main command on the tiny world, plus `--gguf f32`:
    run once for the end-to-end test of the command and the llama.cpp tests of its GGUF (35 s each)."""
    out = tmp_path_factory.mktemp("whoami") / "whoami-tiny"
    script = Path(__file__).resolve().parent.parent / "scripts" / "train_whoami.py"
    run = subprocess.run([sys.executable, str(script), "--loss", "ce", "--model", "tiny", "--out", str(out),
                          "--gguf", "f32"], capture_output=True, text=True, timeout=900)
    return out, run
