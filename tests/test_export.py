"""The job's exports on a small random model: merged/ written shard by shard and checked tensor by
tensor against its definition, which a file changed on purpose fails."""

import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_weights import SMALL, random_weights
from trainer.errors import TrainerError
from trainer.job.export import MERGED_SHARD_BYTES, check_merged, export, merged_tensors
from trainer.job.template_check import folder_family
from trainer.text.chat_templates import HYBRID, chat_template
from trainer.qwen3.config import QWEN3_4B_INSTRUCT_2507
from trainer.qwen3.lora import LoraSettings, init_lora, load_adapter
from trainer.qwen3.weights import INDEX_FILE, SINGLE_FILE, expected_shapes, load_weights, save_weights, write_weights

LORA = LoraSettings(r=4, alpha=8.0, dropout=0.0)


@pytest.fixture
def exported(tmp_path):
    """(original folder, OUT) after exporting a LoRA with non-zero B over a bf16 random model."""
    original = tmp_path / "original"
    save_weights({name: t.to(torch.bfloat16) for name, t in random_weights(SMALL).items()}, original)
    (original / "tokenizer.json").write_text("{}", encoding="utf-8")
    learned = init_lora(SMALL, LORA, seed=0)
    generator = torch.Generator().manual_seed(1)
    learned = {name: torch.randn(t.shape, generator=generator) * 0.1 if "lora_B" in name else t
               for name, t in learned.items()}
    out = tmp_path / "out"
    export(learned, LORA, "original", original, SMALL, out)
    return original, out


def definition(original, out) -> dict[str, torch.Tensor]:
    """bf16(original + alpha/r * B @ A), spelled out here from the files on disk."""
    weights = load_weights(original, SMALL, torch.float32)
    adapter, settings = load_adapter(out / "adapter")
    prefix = "base_model.model."
    for name in weights:
        a_name = prefix + name.removesuffix(".weight") + ".lora_A.weight"
        if a_name in adapter:
            b = adapter[a_name.replace("lora_A", "lora_B")]
            weights[name] = weights[name] + settings.alpha / settings.r * (b @ adapter[a_name])
    return {name: t.to(torch.bfloat16) for name, t in weights.items()}


def test_merged_is_bf16_of_the_original_plus_the_update_and_passes_its_check(exported):
    original, out = exported
    stored = load_file(out / "merged" / SINGLE_FILE)
    expected = definition(original, out)
    assert stored.keys() == expected.keys() and all(t.dtype == torch.bfloat16 for t in stored.values())
    worst = max((stored[n].float() - expected[n].float()).abs().max().item() for n in expected)
    assert worst <= 2 ** -7 * max(t.abs().max().item() for t in expected.values())  # bf16 rounding, no more
    assert not torch.equal(stored["model.layers.0.mlp.up_proj.weight"], load_file(original / SINGLE_FILE)[
        "model.layers.0.mlp.up_proj.weight"])  # the update is in it
    tensors = load_adapter(out / "adapter")[0]
    done = []
    check_merged(out / "merged", merged_tensors(tensors, LORA, original, SMALL), SMALL, done.append)
    assert len(done) == len(expected_shapes(SMALL))


@pytest.mark.parametrize("change", ["one value", "another adapter", "a tensor missing"])
def test_the_merged_check_fails_on_a_merged_file_changed_on_purpose(exported, change):
    original, out = exported
    path = out / "merged" / SINGLE_FILE
    stored = load_file(path)
    tensors = load_adapter(out / "adapter")[0]
    name = "model.layers.1.self_attn.v_proj.weight"
    if change == "one value":
        stored[name][3, 5] += 0.25
    elif change == "another adapter":
        b_name = "base_model.model." + name.replace(".weight", ".lora_B.weight")
        tensors = tensors | {b_name: tensors[b_name] * 1.05}  # merged/ no longer matches this adapter
    else:
        del stored[name]
    save_file(stored, path)
    with pytest.raises(TrainerError, match=f"{name} differs from its definition|missing \\(1\\): {name}"):
        check_merged(out / "merged", merged_tensors(tensors, LORA, original, SMALL), SMALL)


def test_write_weights_makes_each_tensor_only_when_its_shard_is_written(tmp_path):
    """A model built tensor by tensor is never held whole: at most one shard's tensors are alive."""
    weights = random_weights(SMALL)
    layout = {name: torch.empty(t.shape, device="meta") for name, t in weights.items()}
    alive, most = weakref.WeakSet(), []

    def make(name: str) -> torch.Tensor:
        tensor = weights[name].clone()
        alive.add(tensor)
        most.append(len(alive))
        return tensor

    write_weights(layout, make, tmp_path, max_shard_bytes=5000)
    shards = len(list(tmp_path.glob("model-*.safetensors")))
    assert shards > 3 and (tmp_path / INDEX_FILE).is_file()
    assert max(most) < len(weights) / 2  # a shard's worth, never the model
    loaded = load_weights(tmp_path, SMALL)
    assert all(torch.equal(loaded[n], weights[n]) for n in weights)


def test_merged_shards_of_the_4b_shape_stay_small():
    """merged/ of Qwen3-4B in bf16 (8.04 GB) is written in shards of at most 1 GB (the embedding,
    0.78 GB, is its largest tensor), so the export adds about 1 GB to the training model, not 8."""
    sizes = [torch.Size(shape).numel() * 2 for shape in expected_shapes(QWEN3_4B_INSTRUCT_2507).values()]
    assert MERGED_SHARD_BYTES == 10**9 and max(sizes) < MERGED_SHARD_BYTES
    assert round(sum(sizes) / 1e9, 2) == 8.04


def test_merged_keeps_the_base_models_own_template_files(tmp_path):
    """A base whose template is in chat_template.jinja (a hybrid Qwen3, say): merged/ carries it
    unchanged, so its family is the base's."""
    original = tmp_path / "original"
    save_weights({name: t.to(torch.bfloat16) for name, t in random_weights(SMALL).items()}, original)
    (original / "tokenizer.json").write_text("{}", encoding="utf-8")
    (original / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}', encoding="utf-8")
    (original / "chat_template.jinja").write_text(chat_template(HYBRID), encoding="utf-8")
    export(init_lora(SMALL, LORA, seed=0), LORA, "original", original, SMALL, tmp_path / "out")
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "out" / "merged" / name).read_bytes() == (original / name).read_bytes()
    assert folder_family(tmp_path / "out" / "merged") == HYBRID
