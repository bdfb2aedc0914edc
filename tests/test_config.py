"""config.json reading: presets, both transformers layouts, round trips, and loud rejections."""

import json
from dataclasses import asdict

import pytest

from trainer.errors import TrainerError
from trainer.qwen3.config import QWEN3_0_6B, QWEN3_4B_INSTRUCT_2507, TINY, config_to_json, load_config

# Qwen3-4B-Instruct-2507's config.json as published (transformers 4.x layout), from the model card facts.
QWEN3_4B_2507_JSON = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 2560, "initializer_range": 0.02, "intermediate_size": 9728,
    "max_position_embeddings": 262144, "max_window_layers": 36, "model_type": "qwen3",
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 5000000, "sliding_window": None, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}


def write_config(tmp_path, raw: dict):
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


def test_tiny_preset_is_qwen3_shaped():
    assert (TINY.vocab_size, TINY.hidden_size, TINY.intermediate_size, TINY.num_hidden_layers) == (151936, 128, 384, 4)
    assert (TINY.num_attention_heads, TINY.num_key_value_heads, TINY.head_dim) == (4, 2, 32)
    assert TINY.tie_word_embeddings and TINY.rope_theta == 5e6 and TINY.max_position_embeddings == 4096


def test_published_4b_config_reads_as_the_preset(tmp_path):
    assert load_config(write_config(tmp_path, QWEN3_4B_2507_JSON)) == QWEN3_4B_INSTRUCT_2507


def test_transformers_5_layout_with_rope_parameters(tmp_path):
    from transformers import Qwen3Config as HFQwen3Config

    HFQwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=True,
                  max_position_embeddings=40960).save_pretrained(tmp_path)
    assert "rope_parameters" in json.loads((tmp_path / "config.json").read_text())
    assert load_config(tmp_path) == QWEN3_0_6B


@pytest.mark.parametrize("config", [TINY, QWEN3_0_6B, QWEN3_4B_INSTRUCT_2507])
def test_config_to_json_round_trips(tmp_path, config):
    assert load_config(write_config(tmp_path, config_to_json(config))) == config


def test_config_to_json_is_read_by_transformers(tmp_path):
    from transformers import AutoConfig

    write_config(tmp_path, config_to_json(TINY))
    hf = AutoConfig.from_pretrained(tmp_path)
    assert type(hf).__name__ == "Qwen3Config"
    assert hf.rope_parameters["rope_theta"] == TINY.rope_theta
    ours = {key: getattr(hf, key) for key in asdict(TINY) if key != "rope_theta"}
    assert ours == {key: value for key, value in asdict(TINY).items() if key != "rope_theta"}
    assert (hf.bos_token_id, hf.eos_token_id) == (151643, 151645)


def test_head_dim_defaults_to_hidden_over_heads(tmp_path):
    raw = {key: value for key, value in QWEN3_4B_2507_JSON.items() if key != "head_dim"}
    assert load_config(write_config(tmp_path, raw)).head_dim == 2560 // 32


@pytest.mark.parametrize("change, words", [
    ({"model_type": "llama"}, "model_type is 'llama'"),
    ({"model_type": "qwen3_moe"}, "only dense 'qwen3'"),
    ({"num_experts": 128}, "mixture-of-experts keys ['num_experts']"),
    ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
    ({"attention_bias": True}, "attention_bias is true"),
    ({"use_sliding_window": True}, "use_sliding_window is true"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling asks for RoPE type 'yarn'"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e6}}, "rope_parameters asks for RoPE type 'linear'"),
    ({"rope_theta": None}, "no rope_theta"),
    ({"num_key_value_heads": 5}, "not a multiple of num_key_value_heads 5"),
    ({"hidden_size": None}, "missing required keys ['hidden_size']"),
])
def test_unsupported_configs_are_rejected_by_name(tmp_path, change, words):
    raw = {key: value for key, value in (QWEN3_4B_2507_JSON | change).items() if value is not None}
    with pytest.raises(TrainerError, match="config.json") as error:
        load_config(write_config(tmp_path, raw))
    assert words in str(error.value)


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(TrainerError, match=r"config\.json: not found"):
        load_config(tmp_path)


def test_broken_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TrainerError, match=r"config\.json: not valid JSON"):
        load_config(tmp_path)
