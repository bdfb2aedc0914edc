"""LoRA: init, step-0 identity, merging, targets, save/load, and parity with PEFT."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from trainer.errors import TrainerError
from trainer.job.tiny import random_weights
from trainer.qwen3.config import Qwen3Config, load_config
from trainer.qwen3.lora import (ALL_PROJECTIONS, LoraSettings, adapter_config_json, init_lora, load_adapter, make_adapter,
                                merged_weight, save_adapter, target_weight_names)
from trainer.qwen3.model import forward, project_to_logits
from trainer.qwen3.weights import load_weights

SMALL = Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                    rope_theta=1e4, tie_word_embeddings=True, max_position_embeddings=128)
# (out, in) of each projection for SMALL, written out by hand.
SMALL_SHAPES = {"q_proj": (32, 32), "k_proj": (16, 32), "v_proj": (16, 32), "o_proj": (32, 32),
                "gate_proj": (64, 32), "up_proj": (64, 32), "down_proj": (32, 64)}


def merge_lora(weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], scale: float) -> dict:
    """Dense weights with every LoRA update folded in, as the export folds them one at a time."""
    return {name: merged_weight(name, weight, tensors, scale) for name, weight in weights.items()}


def randomize_b(tensors: dict[str, torch.Tensor], seed: int, std: float = 0.3) -> dict[str, torch.Tensor]:
    """The same adapter with random nonzero B matrices (after training B is no longer zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in tensors.items():
            if name.endswith("lora_B.weight"):
                t.copy_(torch.randn(t.shape, generator=generator) * std)
    return tensors


def logits(weights, config, ids, adapter=None) -> torch.Tensor:
    with torch.no_grad():
        return project_to_logits(weights, config, forward(weights, config, ids, lora=adapter))


def test_init_lora_shapes_bounds_and_names():
    settings = LoraSettings(r=4, alpha=8.0)
    tensors = init_lora(SMALL, settings, seed=0)
    assert len(tensors) == 2 * 7 * SMALL.num_hidden_layers
    for layer in range(SMALL.num_hidden_layers):
        for target, (out_features, in_features) in SMALL_SHAPES.items():
            block = "self_attn" if target in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{block}.{target}"
            a, b = tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"]
            assert a.shape == (4, in_features) and b.shape == (out_features, 4)
            assert a.dtype == b.dtype == torch.float32
            assert a.requires_grad and b.requires_grad and a.is_leaf and b.is_leaf
            assert torch.equal(b, torch.zeros(out_features, 4))
            assert a.abs().max() <= 1 / math.sqrt(in_features)
            assert a.abs().max() > 0.5 / math.sqrt(in_features)  # spread over the range, not tiny
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in tensors


def test_init_lora_is_deterministic_per_seed():
    settings = LoraSettings(r=4)
    first, again, other = (init_lora(SMALL, settings, seed) for seed in (1, 1, 2))
    assert all(torch.equal(first[name], again[name]) for name in first)
    a_name = "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"
    assert not torch.equal(first[a_name], other[a_name])


def test_lora_at_step_zero_gives_the_base_logits():
    weights = random_weights(SMALL, seed=3)
    settings = LoraSettings(r=4, alpha=16.0, dropout=0.0)
    adapter = make_adapter(init_lora(SMALL, settings, seed=4), settings, training=False, dtype=torch.float32)
    ids = torch.randint(0, SMALL.vocab_size, (2, 7), generator=torch.Generator().manual_seed(5))
    assert torch.equal(logits(weights, SMALL, ids, adapter), logits(weights, SMALL, ids))


def test_merged_weights_equal_the_unmerged_adapter():
    weights = random_weights(SMALL, seed=6)
    settings = LoraSettings(r=4, alpha=8.0, dropout=0.0)
    tensors = randomize_b(init_lora(SMALL, settings, seed=7), seed=8)
    adapter = make_adapter(tensors, settings, training=False, dtype=torch.float32)
    merged = merge_lora(weights, tensors, settings.scale)
    ids = torch.randint(0, SMALL.vocab_size, (2, 9), generator=torch.Generator().manual_seed(9))
    unmerged_logits, merged_logits = logits(weights, SMALL, ids, adapter), logits(merged, SMALL, ids)
    diff = (unmerged_logits - merged_logits).abs().max().item()
    print(f"\nmerged vs unmerged LoRA: max abs logit diff {diff:.2e}")
    assert diff < 1e-5
    assert (merged_logits - logits(weights, SMALL, ids)).abs().max() > 1e-2
    name = "model.layers.0.mlp.down_proj.weight"
    a, b = tensors[f"base_model.model.{name[:-7]}.lora_A.weight"], tensors[f"base_model.model.{name[:-7]}.lora_B.weight"]
    assert torch.allclose(merged[name], weights[name] + 2.0 * b.detach() @ a.detach(), atol=1e-6)
    assert torch.equal(merged["model.norm.weight"], weights["model.norm.weight"])
    assert not merged[name].requires_grad


def test_merge_keeps_each_weights_dtype():
    weights = {name: t.to(torch.bfloat16) for name, t in random_weights(SMALL, seed=10).items()}
    tensors = randomize_b(init_lora(SMALL, LoraSettings(r=2), seed=11), seed=12)
    merged = merge_lora(weights, tensors, scale=2.0)
    assert all(merged[name].dtype == torch.bfloat16 for name in weights)


def test_target_subsets_and_unknown_targets():
    names = target_weight_names(SMALL, ("q_proj", "down_proj"))
    assert names == ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
                     "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    tensors = init_lora(SMALL, LoraSettings(r=2, targets=("v_proj",)), seed=0)
    assert sorted(tensors) == [f"base_model.model.model.layers.{i}.self_attn.v_proj.lora_{m}.weight"
                               for i in range(2) for m in "AB"]
    assert len(target_weight_names(SMALL, ALL_PROJECTIONS)) == 14
    with pytest.raises(TrainerError, match="qkv_proj"):
        target_weight_names(SMALL, ("q_proj", "qkv_proj"))
    with pytest.raises(TrainerError, match="lm_head"):
        init_lora(SMALL, LoraSettings(targets=("lm_head",)), seed=0)


def test_save_and_load_adapter_round_trip(tmp_path):
    settings = LoraSettings(r=4, alpha=12.0, dropout=0.1, targets=("k_proj", "up_proj"))
    tensors = randomize_b(init_lora(SMALL, settings, seed=13), seed=14)
    save_adapter(tensors, settings, "some/base", tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json",
                                                                        "adapter_model.safetensors"]
    raw = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert raw["r"] == 4 and raw["lora_alpha"] == 12.0 and raw["base_model_name_or_path"] == "some/base"
    assert raw["peft_type"] == "LORA" and raw["target_modules"] == ["k_proj", "up_proj"]
    loaded, loaded_settings = load_adapter(tmp_path / "adapter")
    assert loaded_settings == settings
    assert sorted(loaded) == sorted(tensors)
    assert all(torch.equal(loaded[name], tensors[name].detach()) for name in tensors)
    assert load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).keys() == tensors.keys()
    modes = {(tmp_path / "adapter" / name).stat().st_mode & 0o077 for name in ("adapter_config.json",
                                                                               "adapter_model.safetensors")}
    assert len(modes) == 1  # the weights are as readable by others as the config next to them


def test_load_adapter_errors(tmp_path):
    with pytest.raises(TrainerError, match="adapter_config.json"):
        load_adapter(tmp_path)
    save_adapter(init_lora(SMALL, LoraSettings(r=2), seed=0), LoraSettings(r=2), "base", tmp_path)
    raw = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(raw | {"peft_type": "IA3"}))
    with pytest.raises(TrainerError, match="IA3"):
        load_adapter(tmp_path)


@pytest.fixture
def peft_pair(hf_qwen3, tmp_path):
    """A random transformers Qwen3, our adapter for it (random B) saved in PEFT's layout, and PEFT's model."""
    from peft import PeftModel
    from transformers import Qwen3ForCausalLM

    _, model_dir = hf_qwen3("base", seed=21, tie_word_embeddings=False)
    config = load_config(model_dir)
    settings = LoraSettings(r=4, alpha=12.0, dropout=0.05)
    tensors = randomize_b(init_lora(config, settings, seed=22), seed=23, std=0.2)
    save_adapter(tensors, settings, str(model_dir), tmp_path / "adapter")
    assert adapter_config_json(settings, str(model_dir))["base_model_name_or_path"] == str(model_dir)
    peft_model = PeftModel.from_pretrained(Qwen3ForCausalLM.from_pretrained(model_dir), tmp_path / "adapter").eval()
    return model_dir, config, settings, tensors, peft_model


def test_peft_loads_our_adapter_with_the_same_logits(peft_pair):
    model_dir, config, settings, tensors, peft_model = peft_pair
    weights = load_weights(model_dir, config)
    ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(24))
    adapter = make_adapter(tensors, settings, training=False, dtype=torch.float32)
    ours = logits(weights, config, ids, adapter)
    with torch.no_grad():
        theirs = peft_model(ids).logits
        base = peft_model.get_base_model()
        with peft_model.disable_adapter():
            their_base = base(ids).logits
    diff = (ours - theirs).abs().max().item()
    print(f"\nPEFT vs our LoRA forward: max abs logit diff {diff:.2e}")
    assert diff < 1e-4
    assert (theirs - their_base).abs().max() > 1e-2  # PEFT really applied the adapter


def test_peft_merge_and_unload_equals_merge_lora(peft_pair):
    model_dir, config, settings, tensors, peft_model = peft_pair
    merged_theirs = peft_model.merge_and_unload().state_dict()
    merged_ours = merge_lora(load_weights(model_dir, config), tensors, settings.scale)
    diffs = {name: (merged_ours[name] - merged_theirs[name]).abs().max().item() for name in merged_ours}
    worst = max(diffs, key=diffs.get)
    print(f"\nPEFT merge_and_unload vs merge_lora: max abs weight diff {diffs[worst]:.2e} ({worst})")
    assert diffs[worst] < 1e-6
    ids = torch.randint(0, config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(25))
    assert (logits(merged_ours, config, ids) - logits(load_weights(model_dir, config), config, ids)).abs().max() > 1e-2
