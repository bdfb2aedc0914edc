"""What an exported adapter/ + merged/ pair must satisfy, recomputed from the files alone.

Shared by tests/test_whoami_job.py, tests/test_full_disk.py and tests/test_scripts.py (not a test
file itself). The expectation is built here from safetensors and adapter_config.json, without
trainer.qwen3.lora, so a bug in the library's merge cannot also be in the value it is checked against.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def adapter_scale(adapter_dir: Path) -> float:
    """alpha / r from PEFT's adapter_config.json."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    return float(config["lora_alpha"]) / float(config["r"])


def peft_pair(name: str) -> tuple[str, str]:
    """PEFT's (lora_A, lora_B) names for checkpoint weight `name` (spelled out here, not imported)."""
    module = "base_model.model." + name.removesuffix(".weight")
    return f"{module}.lora_A.weight", f"{module}.lora_B.weight"


def expected_merge(base: dict[str, torch.Tensor], adapter_dir: Path) -> dict[str, torch.Tensor]:
    """bf16(W + scale * B @ A) in float32 for every adapted weight of `base`, bf16(W) for the rest;
    a tied lm_head is left out. Every adapter tensor must find its weight."""
    lora = load_file(str(adapter_dir / "adapter_model.safetensors"))
    scale = adapter_scale(adapter_dir)
    expected, used = {}, set()
    for name, weight in base.items():
        a, b = peft_pair(name)
        if a in lora:
            weight = weight.float() + scale * (lora[b].float() @ lora[a].float())
            used |= {a, b}
        expected[name] = weight.to(torch.bfloat16)
    assert used == set(lora), f"adapter tensors that match no base weight: {sorted(set(lora) - used)[:3]}"
    return expected


def merged_tensors(merged_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(merged_dir / "model.safetensors"))


def max_diff(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """max |found - expected| over every tensor (the names must be the same)."""
    assert sorted(found) == sorted(expected)
    return max((found[n].float() - expected[n].float()).abs().max().item() for n in expected)


def assert_pair_matches(original_dir: Path, adapter_dir: Path, merged_dir: Path) -> dict[str, torch.Tensor]:
    """merged/ holds exactly bf16(original + scale * B @ A) of adapter/, tensor by tensor, and keeps
    the embedding tied (no lm_head, or one equal to the embedding). Returns the merged tensors."""
    original = {name: t for name, t in load_file(str(original_dir / "model.safetensors")).items() if name != HEAD}
    expected, merged = expected_merge(original, adapter_dir), merged_tensors(merged_dir)
    head = merged.pop(HEAD, None)
    assert head is None or torch.equal(head, merged[EMBED]), "lm_head differs from the tied embedding"
    assert json.loads((merged_dir / "config.json").read_text(encoding="utf-8"))["tie_word_embeddings"] is True
    assert sorted(merged) == sorted(expected), sorted(set(merged) ^ set(expected))
    wrong = [name for name in expected if not torch.equal(merged[name], expected[name])]
    assert not wrong, f"{len(wrong)} merged tensors differ from bf16(original + scale*B@A), e.g. {wrong[:3]}, " \
                      f"max |diff| {max_diff(merged, expected):.3g}"
    return merged
