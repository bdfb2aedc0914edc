"""safetensors loading and saving, loud loader errors, and the hub download path (with a local stand-in)."""

import errno
import json
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file

import trainer.qwen3.weights
from trainer.errors import TrainerError
from trainer.qwen3.config import QWEN3_4B_INSTRUCT_2507, TINY, Qwen3Config, config_to_json, load_config
from trainer.qwen3.model import forward, project_to_logits
from trainer.qwen3.weights import (HUB_PATTERNS, INDEX_FILE, SINGLE_FILE, expected_shapes, load_weights, read_tensor,
                                   remove_hidden, resolve_model_dir, save_weights)

SMALL = replace(TINY, vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=8)


def random_weights(config: Qwen3Config, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) * 0.1 for name, shape in expected_shapes(config).items()}


def test_expected_shapes_of_qwen3_4b_add_up_to_its_published_size():
    shapes = expected_shapes(QWEN3_4B_INSTRUCT_2507)
    sizes = {name: torch.Size(shape).numel() for name, shape in shapes.items()}
    linear = sum(size for name, size in sizes.items() if name.endswith("_proj.weight"))
    assert "lm_head.weight" not in shapes and len(shapes) == 1 + 36 * 11 + 1
    assert round(sum(sizes.values()) / 1e9, 2) == 4.02
    assert round(linear / 1e9, 2) == 3.63 and round(sizes["model.embed_tokens.weight"] / 1e9, 2) == 0.39


def test_untied_config_expects_lm_head():
    assert expected_shapes(replace(SMALL, tie_word_embeddings=False))["lm_head.weight"] == (100, 16)


@pytest.mark.parametrize("max_shard_bytes", [10**9, 5000])
def test_save_then_load_round_trips(tmp_path, max_shard_bytes):
    weights = random_weights(SMALL)
    save_weights(weights, tmp_path, max_shard_bytes)
    assert (tmp_path / INDEX_FILE).is_file() == (max_shard_bytes == 5000)
    loaded = load_weights(tmp_path, SMALL)
    assert list(loaded) == list(weights) and all(torch.equal(loaded[n], weights[n]) for n in weights)
    assert not list(tmp_path.glob(".*.tmp"))


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Exported weights are readable by others, like config.json, under the usual umask 022."""
    old = os.umask(0o022)
    try:
        save_weights(random_weights(SMALL), tmp_path, max_shard_bytes=10_000)
    finally:
        os.umask(old)
    files = list(tmp_path.glob("*.safetensors")) + [tmp_path / INDEX_FILE]
    assert len(files) > 2 and all(stat.S_IMODE(path.stat().st_mode) == 0o644 for path in files)


def test_resaving_in_another_layout_removes_the_old_files(tmp_path):
    weights = random_weights(SMALL)
    save_weights(weights, tmp_path, max_shard_bytes=5000)
    save_weights(weights, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SINGLE_FILE]
    save_weights(weights, tmp_path, max_shard_bytes=5000)
    assert not (tmp_path / SINGLE_FILE).exists()


def test_transformers_checkpoint_single_and_sharded(hf_qwen3):
    for name, shard in (("single", None), ("sharded", "100KB")):
        model, model_dir = hf_qwen3(name, tie_word_embeddings=False, max_shard_size=shard)
        assert (model_dir / INDEX_FILE).is_file() == (shard is not None)
        loaded = load_weights(model_dir, load_config(model_dir))
        state = model.state_dict()
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[n], state[n]) for n in state)


def test_dtype_and_transform_see_every_tensor(tmp_path):
    save_weights(random_weights(SMALL), tmp_path)
    seen = []

    def describe(name: str, tensor: torch.Tensor) -> str:
        seen.append(name)
        return f"{tensor.dtype} {tuple(tensor.shape)}"

    loaded = load_weights(tmp_path, SMALL, dtype=torch.bfloat16, transform=describe)
    assert seen == list(expected_shapes(SMALL))  # every tensor, one at a time, in checkpoint order
    assert loaded["model.norm.weight"] == "torch.bfloat16 (16,)"


def mapped_files(address: int) -> list[str]:
    """The files whose memory mappings in this process contain `address` (Linux /proc)."""
    files = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        start, end = (int(part, 16) for part in span.split("-"))
        if start <= address < end and len(rest) == 5:
            files.append(rest[4])
    return files


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_read_tensor_owns_its_memory(tmp_path, dtype):
    """Same dtype as stored or not, the result never points into the mapped file."""
    stored = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    save_file({"w": stored}, str(tmp_path / "w.safetensors"))
    tensor = read_tensor(tmp_path / "w.safetensors", "w", dtype, "cpu")
    assert tensor.dtype == dtype and torch.equal(tensor, stored.to(dtype))
    assert str(tmp_path / "w.safetensors") not in mapped_files(tensor.data_ptr())


def test_tied_checkpoint_with_lm_head_is_accepted(tmp_path):
    weights = random_weights(SMALL) | {"lm_head.weight": torch.zeros(100, 16)}
    save_weights(weights, tmp_path)
    assert "lm_head.weight" not in load_weights(tmp_path, SMALL)


def test_exported_model_loads_in_transformers(tmp_path):
    from transformers import Qwen3ForCausalLM

    config = replace(SMALL, tie_word_embeddings=False)
    weights = random_weights(config)
    save_weights(weights, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config_to_json(config, dtype="float32")))
    model = Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        theirs = model(ids).logits
    ours = project_to_logits(weights, config, forward(weights, config, ids))
    assert (ours - theirs).abs().max() < 1e-4


def test_one_error_names_missing_unexpected_and_misshaped(tmp_path):
    weights = random_weights(SMALL)
    del weights["model.layers.1.mlp.up_proj.weight"]
    weights["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(9, 16)
    weights["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(16)
    save_weights(weights, tmp_path)
    with pytest.raises(TrainerError) as error:
        load_weights(tmp_path, SMALL)
    message = str(error.value)
    assert str(tmp_path) in message
    assert "missing (1): model.layers.1.mlp.up_proj.weight" in message
    assert "unexpected (1): model.layers.0.self_attn.q_proj.bias" in message
    assert "model.layers.0.self_attn.k_proj.weight expected (8, 16) found (9, 16)" in message


def test_untied_checkpoint_without_lm_head_is_missing_it(tmp_path):
    save_weights(random_weights(SMALL), tmp_path)
    with pytest.raises(TrainerError, match=r"missing \(1\): lm_head.weight"):
        load_weights(tmp_path, replace(SMALL, tie_word_embeddings=False))


def test_pickle_only_directory_is_refused_with_the_reason(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(TrainerError, match=r"pytorch_model\.bin.*safetensors only.*pickles that can execute code"):
        load_weights(tmp_path, SMALL)


def test_empty_directory_and_missing_directory(tmp_path):
    with pytest.raises(TrainerError, match=r"no model\.safetensors"):
        load_weights(tmp_path, SMALL)
    with pytest.raises(TrainerError, match="not a directory"):
        load_weights(tmp_path / "nowhere", SMALL)


def test_missing_shard_is_named(tmp_path):
    save_weights(random_weights(SMALL), tmp_path, max_shard_bytes=5000)
    shard = json.loads((tmp_path / INDEX_FILE).read_text())["weight_map"]["model.norm.weight"]
    (tmp_path / shard).unlink()
    with pytest.raises(TrainerError, match=rf"index\.json: names shard files that do not exist: \['{shard}'\]"):
        load_weights(tmp_path, SMALL)


def test_corrupt_safetensors_is_named(tmp_path):
    (tmp_path / SINGLE_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(TrainerError, match=r"model\.safetensors: not a readable safetensors file"):
        load_weights(tmp_path, SMALL)


def test_packed_weights_are_not_saved(tmp_path):
    with pytest.raises(TrainerError, match="model.norm.weight"):
        save_weights({"model.norm.weight": object()}, tmp_path)


def test_local_directory_is_returned_as_is(tmp_path):
    assert resolve_model_dir(tmp_path) == tmp_path
    assert resolve_model_dir(str(tmp_path)) == tmp_path


def test_hub_id_is_downloaded_into_weights_dir(tmp_path, monkeypatch):
    hub = tmp_path / "hub"  # the stand-in for the remote repository
    hub.mkdir()
    save_file({"x": torch.zeros(1)}, hub / SINGLE_FILE)
    (hub / "config.json").write_text("{}")
    calls = []

    def fake_snapshot_download(repo_id, *, local_dir, allow_patterns):
        calls.append((repo_id, Path(local_dir), allow_patterns))
        shutil.copytree(hub, local_dir)
        return str(local_dir)

    monkeypatch.setenv("QWEN3_TRAINER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr(trainer.qwen3.weights, "snapshot_download", fake_snapshot_download)
    model_dir = resolve_model_dir("Qwen/Qwen3-4B-Instruct-2507")
    assert model_dir == tmp_path / "weights" / "Qwen--Qwen3-4B-Instruct-2507"
    assert calls == [("Qwen/Qwen3-4B-Instruct-2507", model_dir, HUB_PATTERNS)]
    assert (model_dir / SINGLE_FILE).is_file() and (model_dir / "config.json").is_file()


def test_offline_hub_suggests_the_tiny_model(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN3_TRAINER_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TrainerError, match=r"Qwen/Qwen3-4B-Instruct-2507.*offline or unreachable.*--model tiny"):
        resolve_model_dir("Qwen/Qwen3-4B-Instruct-2507")


def test_neither_directory_nor_hub_id(tmp_path):
    with pytest.raises(TrainerError, match="not a local directory nor a Hugging Face hub id"):
        resolve_model_dir(tmp_path / "no" / "such" / "dir")


def test_a_failed_safetensors_write_is_the_oserror_it_is(tmp_path):
    """safetensors hides I/O failures in a SafetensorError's text; the export's full-disk handling
    needs the errno, so save_safetensors raises the OSError itself."""
    from trainer.qwen3.weights import save_safetensors

    with pytest.raises(OSError) as error:
        save_safetensors({"x": torch.zeros(2)}, tmp_path / "no-such-folder" / "x.safetensors")
    assert error.value.errno == errno.ENOENT and error.value.filename == str(tmp_path / "no-such-folder" / "x.safetensors")


def test_a_hidden_folder_is_removed_even_when_ctrl_c_lands_midway(tmp_path, monkeypatch):
    doomed = tmp_path / ".deleting-step-000002"
    (doomed / "inner").mkdir(parents=True)
    (doomed / "inner" / "tensors.safetensors").write_bytes(b"x" * 100)
    real_rmtree, calls = shutil.rmtree, []

    def interrupted_once(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            real_rmtree(Path(path) / "inner")  # part of the work done, then the second Ctrl-C
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        remove_hidden(doomed)
    assert not doomed.exists() and len(calls) == 2
