"""GGUF export: llama.cpp's names, hyper-parameters, tokenizer and types, read back with the
gguf package's reader (the llama.cpp runs themselves are in test_llama_cpp.py). Reading a file
back takes the reader about 8 s (it parses 300,000 vocabulary and merge strings), so the fast
tests share one f32 file, and the other types are slow tests."""

import errno
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.errors import TrainerError
from trainer.job.gguf_export import (GGUF_TYPES, default_gguf_path, modelfile_text, require_gguf, vocabulary,
                                     write_gguf)
from trainer.job.loading import resolve_model
from trainer.job.tiny import random_weights
from trainer.qwen3.config import TINY, load_config
from trainer.qwen3.hf_folder import write_model_dir
from trainer.qwen3.weights import load_weights
from trainer.text.chat import QWEN3_CHAT_TEMPLATE
from trainer.text.chat_templates import HYBRID, INSTRUCT_2507, THINKING_2507
from trainer.text.tokenizer import tiny_tokenizer_path

gguf = pytest.importorskip("gguf")
REPO = Path(__file__).resolve().parent.parent
# Our names -> llama.cpp's, written out by hand for one tensor of each kind.
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
    "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
    "model.layers.1.self_attn.k_proj.weight": "blk.1.attn_k.weight",
    "model.layers.2.self_attn.v_proj.weight": "blk.2.attn_v.weight",
    "model.layers.3.self_attn.o_proj.weight": "blk.3.attn_output.weight",
    "model.layers.0.self_attn.q_norm.weight": "blk.0.attn_q_norm.weight",
    "model.layers.1.self_attn.k_norm.weight": "blk.1.attn_k_norm.weight",
    "model.layers.2.post_attention_layernorm.weight": "blk.2.ffn_norm.weight",
    "model.layers.3.mlp.gate_proj.weight": "blk.3.ffn_gate.weight",
    "model.layers.3.mlp.up_proj.weight": "blk.3.ffn_up.weight",
    "model.layers.3.mlp.down_proj.weight": "blk.3.ffn_down.weight",
}


@pytest.fixture(scope="module")
def world_dir() -> Path:
    return resolve_model("tiny")


@pytest.fixture(scope="module")
def world_weights(world_dir) -> dict[str, torch.Tensor]:
    return load_weights(world_dir, load_config(world_dir))


def read(path: Path):
    reader = gguf.GGUFReader(path)
    return reader, {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def world_f32(world_dir, tmp_path_factory):
    return read(write_gguf(world_dir, tmp_path_factory.mktemp("gguf") / "world-f32.gguf", "f32"))


def field(reader, key: str):
    return reader.fields[key].contents()


def test_the_vocabulary_types_every_token_and_pads_to_the_embedding_rows():
    tokenizer_json = {"model": {"vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
                      "added_tokens": [{"id": 3, "content": "<|im_end|>", "special": True},
                                       {"id": 4, "content": "<think>", "special": False}]}
    tokens, types, merges = vocabulary(tokenizer_json, 7, gguf)
    assert tokens == ["a", "b", "ab", "<|im_end|>", "<think>", "[PAD5]", "[PAD6]"]
    assert types == [1, 1, 1, 3, 4, 5, 5]  # normal x3, control, user-defined, unused x2
    assert merges == ["a b"]
    pairs = tokenizer_json | {"model": {"vocab": {"a": 0}, "merges": [["a", "b"]]}}
    assert vocabulary(pairs, 5, gguf)[2] == ["a b"]
    with pytest.raises(TrainerError, match="token id 4, but the embedding has only 4 rows"):
        vocabulary(tokenizer_json, 4, gguf)


def test_f32_holds_every_tensor_exactly_under_llama_cpp_names(world_f32, world_weights):
    _, tensors = world_f32
    assert len(tensors) == 1 + 11 * TINY.num_hidden_layers + 1  # tied: no output.weight
    for ours, theirs in NAMES.items():
        stored = tensors[theirs]
        assert stored.tensor_type == gguf.GGMLQuantizationType.F32
        assert tuple(int(n) for n in stored.shape[::-1]) == tuple(world_weights[ours].shape)  # ggml lists dims reversed
        assert torch.equal(torch.from_numpy(np.array(stored.data)).reshape(world_weights[ours].shape), world_weights[ours])


def test_the_header_holds_the_hyper_parameters_tokenizer_and_chat_template(world_f32, qwen_tokenizer):
    reader, _ = world_f32
    assert field(reader, "general.architecture") == "qwen3" and field(reader, "general.name") == "world-f32"
    expected = {"qwen3.block_count": 4, "qwen3.embedding_length": 128, "qwen3.feed_forward_length": 384,
                "qwen3.attention.head_count": 4, "qwen3.attention.head_count_kv": 2, "qwen3.attention.key_length": 32,
                "qwen3.attention.value_length": 32, "qwen3.context_length": TINY.max_position_embeddings,
                "general.file_type": 0, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
                "tokenizer.ggml.eos_token_id": 151645, "tokenizer.ggml.padding_token_id": 151643,
                "tokenizer.ggml.add_bos_token": False}
    assert {key: field(reader, key) for key in expected} == expected
    assert field(reader, "qwen3.rope.freq_base") == TINY.rope_theta
    assert abs(field(reader, "qwen3.attention.layer_norm_rms_epsilon") - TINY.rms_norm_eps) < 1e-12
    assert field(reader, "tokenizer.chat_template") == QWEN3_CHAT_TEMPLATE
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == TINY.vocab_size
    for text in ("你是誰", " F#", "<|im_start|>", "<think>"):
        [token_id] = qwen_tokenizer.encode(text)[-1:]
        assert qwen_tokenizer.backend.id_to_token(token_id) == tokens[token_id]
    assert [types[i] for i in (0, 151643, 151645, 151667, 151668, 151935)] == [1, 3, 3, 4, 4, 5]
    assert len(field(reader, "tokenizer.ggml.merges")) > 150_000


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", GGUF_TYPES[1:])
def test_each_type_stores_matrices_in_it_and_norms_in_f32(tmp_path, world_dir, world_weights, gguf_type):
    reader, tensors = read(write_gguf(world_dir, tmp_path / f"w-{gguf_type}.gguf", gguf_type))
    assert field(reader, "general.file_type") == {"f16": 1, "bf16": 32, "q8_0": 7}[gguf_type]
    kind = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
            "q8_0": gguf.GGMLQuantizationType.Q8_0}[gguf_type]
    for ours, theirs in NAMES.items():
        weight, stored = world_weights[ours], tensors[theirs]
        if weight.ndim == 1:
            assert stored.tensor_type == gguf.GGMLQuantizationType.F32
            continue
        assert stored.tensor_type == kind
        values = torch.from_numpy(gguf.quants.dequantize(np.array(stored.data), kind).copy()).reshape(weight.shape)
        if gguf_type == "q8_0":  # each block of 32: int8 steps of d = max|block| / 127, d then stored in f16
            block_max = weight.reshape(-1, 32).abs().amax(-1, keepdim=True)  # half a step + 127 steps x f16's 2^-11
            assert ((values - weight).reshape(-1, 32).abs() <= block_max * (1 / 254 + 1 / 2048) + 1e-7).all()
            assert (values - weight).abs().max() > 0
        else:
            assert torch.equal(values, weight.to(torch.float16 if gguf_type == "f16" else torch.bfloat16).float())


@pytest.mark.slow
def test_an_untied_lm_head_is_written_as_output(tmp_path):
    config = replace(TINY, tie_word_embeddings=False)
    weights = random_weights(config, seed=3)
    write_model_dir(weights, config, tiny_tokenizer_path(), tmp_path / "untied")
    _, tensors = read(write_gguf(tmp_path / "untied", tmp_path / "untied.gguf", "f32"))
    assert len(tensors) == 1 + 11 * config.num_hidden_layers + 2
    assert torch.equal(torch.from_numpy(np.array(tensors["output.weight"].data)).reshape(config.vocab_size, -1),
                       weights["lm_head.weight"])


def test_a_failed_export_leaves_no_file_behind(tmp_path, world_dir, monkeypatch):
    import trainer.job.gguf_export as export

    calls = []

    def disk_full(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return encoded(*args)

    encoded = export.encoded
    monkeypatch.setattr(export, "encoded", disk_full)
    with pytest.raises(TrainerError, match=rf"no space to write {tmp_path / 'w.gguf'}: it needs about 51\.9 MB, "  # the file: 46.4
                                           r"[0-9.]+ MB are free \(No space left on device\); nothing was written"):
        write_gguf(world_dir, tmp_path / "w.gguf", "f16")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_its_tokenizer_is_one_line_and_writes_nothing(tmp_path, world_dir):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (folder / name).symlink_to(world_dir / name)
    with pytest.raises(TrainerError, match=r"no-tokenizer: no tokenizer\.json \(a GGUF file carries the tokenizer"):
        write_gguf(folder, tmp_path / "out" / "x.gguf", "f16")
    assert not (tmp_path / "out").exists()


def test_without_the_gguf_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` fail
    with pytest.raises(TrainerError, match=r'pip install -e "\.\[gguf\]"'):
        require_gguf()


def test_default_paths_and_the_ollama_modelfile(tmp_path):
    (tmp_path / "whoami-tiny" / "merged").mkdir(parents=True)
    assert default_gguf_path(tmp_path / "whoami-tiny" / "merged", "q8_0") == \
        tmp_path / "whoami-tiny" / "gguf" / "whoami-tiny-q8_0.gguf"
    assert default_gguf_path(tmp_path / "whoami-tiny", "f16") == tmp_path / "gguf" / "whoami-tiny-f16.gguf"
    text = modelfile_text(Path("out/gguf/whoami-tiny-q8_0.gguf"))
    assert text.startswith("FROM ./whoami-tiny-q8_0.gguf\n")
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n" in text and text.count("PARAMETER stop") == 2
    assert '{{ end }}<|im_start|>assistant\n"""\n' in text


@pytest.mark.parametrize("family, opening", [(INSTRUCT_2507, ""), (HYBRID, "<think>\n\n</think>\n\n"),
                                             (THINKING_2507, "<think>\n")])
def test_the_modelfile_opens_the_reply_as_the_family_serves_it(family, opening):
    text = modelfile_text(Path("m.gguf"), family)
    assert f'{{{{ end }}}}<|im_start|>assistant\n{opening}"""\n' in text


def test_the_export_command_writes_the_file_and_its_modelfile(tmp_path, world_dir):
    out = tmp_path / "x" / "world-q8_0.gguf"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "export_gguf.py"), str(world_dir), "--type", "q8_0",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and (out.parent / "world-q8_0.Modelfile").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["world-q8_0.Modelfile", "world-q8_0.gguf"]
    assert result.stdout.startswith(f"wrote {out} (") and result.stdout.strip().endswith("world-q8_0.Modelfile")
