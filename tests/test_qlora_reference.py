"""QLoRA against the reference stack: our NF4 + LoRA equals transformers + bitsandbytes 4-bit + PEFT.

Both sides quantize the same float32 checkpoint with NF4, blocks of 64 and double quantization,
and carry the same LoRA adapter (random A and B, so the update is not zero). Dequantization is
exact and deterministic, so logits, loss and LoRA gradients may differ only by float32 summation
order. The dense (unquantized) model is far from both, so neither side can skip quantization
and still pass.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor

from trainer.qwen3.config import Qwen3Config, load_config
from trainer.qwen3.lora import ALL_PROJECTIONS, LoraSettings, init_lora, make_adapter
from trainer.qwen3.model import Weights, forward, head_weight, lora_names, project_to_logits
from trainer.qwen3.quant import NF4Weight, quant_transform
from trainer.qwen3.weights import load_weights
from trainer.text.data import IGNORE_INDEX
from trainer.training.loss import token_cross_entropy

SETTINGS = LoraSettings(r=4, alpha=12.0, dropout=0.0)  # dropout off: both sides must be deterministic
ANSWER_STARTS = (5, 8)  # per row: the first position whose token is answer text (earlier ones are prompt)
# Worst seen over six seeds (logits ~3, loss ~7, grads ~1): logits 3.3e-6, loss 1.4e-6, LoRA grads 1.5e-6.
# Same codes and scales on both sides, so that is float32 summation order; allow a few times as much.
LOGIT_TOL, LOSS_TOL, GRAD_TOL = 1e-5, 1e-5, 1e-5


@dataclass(frozen=True)
class QLoraPair:
    """Our NF4 weights and adapter, and the reference (bitsandbytes 4-bit + PEFT) with the same adapter."""

    directory: Path
    config: Qwen3Config
    weights: Weights
    tensors: dict[str, Tensor]
    reference: torch.nn.Module


def with_nonzero_b(tensors: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Fill every B with N(0, 0.2): the update B A is then non-zero, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in (name for name in tensors if ".lora_B." in name):
            tensors[name].normal_(0.0, 0.2, generator=generator)
    return tensors


def peft_name(ours: str) -> str:
    """Our PEFT-layout name -> the live PEFT module's parameter name (it adds the adapter's name)."""
    return ours.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


def linear4bit_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The reference's bitsandbytes 4-bit linears by module name (PEFT's ".base_layer" dropped)."""
    import bitsandbytes as bnb

    return {name.removesuffix(".base_layer"): module for name, module in model.named_modules()
            if isinstance(module, bnb.nn.Linear4bit)}


def assert_nf4_double_quantized(model: torch.nn.Module) -> None:
    """All seven projections of both layers, and nothing else, are NF4 with blocks of 64 and nested
    (8-bit) scales, still in the standard layout (not repacked for the bf16 CPU kernel, which
    drops the nesting)."""
    layers = linear4bit_layers(model)
    assert sorted({name.rsplit(".", 1)[1] for name in layers}) == sorted(ALL_PROJECTIONS) and len(layers) == 7 * 2
    for name, module in layers.items():
        state = module.weight.quant_state
        assert (state.quant_type, state.blocksize, state.nested) == ("nf4", 64, True), name
        assert module.weight.dtype == torch.uint8 and not getattr(state, "packing_format_for_cpu", False), name


def keep_float32_kernel(model: torch.nn.Module) -> None:
    """bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a Linear4bit at its first eval forward
    whose input needs no grad, then multiplies in bf16 (absmax and activations rounded: logits
    off by ~4e-2). That is an inference shortcut, not NF4 itself: QLoRA training dequantizes and
    multiplies in the compute dtype, float32 here, as ours does."""
    for module in linear4bit_layers(model).values():
        module.support_avx512bf16_for_cpu = False


def reference_qlora(directory: Path, tensors: dict[str, Tensor]) -> torch.nn.Module:
    """transformers loads the folder 4-bit through bitsandbytes; PEFT adds LoRA, set to our A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig, Qwen3ForCausalLM

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32)
    base = Qwen3ForCausalLM.from_pretrained(directory, quantization_config=quantization, device_map="cpu",
                                            dtype=torch.float32)
    assert_nf4_double_quantized(base)
    keep_float32_kernel(base)
    lora = LoraConfig(r=SETTINGS.r, lora_alpha=SETTINGS.alpha, lora_dropout=SETTINGS.dropout,
                      target_modules=list(SETTINGS.targets), task_type="CAUSAL_LM")
    model = get_peft_model(base, lora).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[peft_name(name)].copy_(tensor)
    assert sum(p.requires_grad for p in params.values()) == len(tensors)  # only LoRA trains
    return model


@pytest.fixture
def qlora_pair(hf_qwen3) -> QLoraPair:
    _, directory = hf_qwen3("base", seed=31)
    config = load_config(directory)
    weights = load_weights(directory, config, transform=quant_transform("nf4"))
    tensors = with_nonzero_b(init_lora(config, SETTINGS, seed=32), seed=33)
    return QLoraPair(directory, config, weights, tensors, reference_qlora(directory, tensors))


def token_rows(config: Qwen3Config) -> tuple[Tensor, Tensor, Tensor]:
    """(ids [2, 12], our labels, the reference's labels): the reference shifts its labels itself,
    ours are already the next token at each position; both mark prompt tokens IGNORE_INDEX."""
    ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(34))
    theirs = ids.clone()
    for row, start in enumerate(ANSWER_STARTS):
        theirs[row, :start] = IGNORE_INDEX
    ours = torch.cat([theirs[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)
    return ids, ours, theirs


def our_logits(pair: QLoraPair, ids: Tensor, weights: Weights | None = None, with_adapter: bool = True) -> Tensor:
    weights = pair.weights if weights is None else weights
    adapter = make_adapter(pair.tensors, SETTINGS, training=False, dtype=torch.float32) if with_adapter else None
    with torch.no_grad():
        return project_to_logits(weights, pair.config, forward(weights, pair.config, ids, lora=adapter))


def test_nf4_codes_equal_bitsandbytes_through_transformers(qlora_pair):
    """The same 4-bit codes and scales: the dequantized weights agree bit for bit."""
    from bitsandbytes.functional import dequantize_4bit

    layers = linear4bit_layers(qlora_pair.reference.get_base_model())
    packed = {name.removesuffix(".weight"): ours for name, ours in qlora_pair.weights.items()
              if isinstance(ours, NF4Weight)}
    assert packed.keys() == layers.keys()
    for name, ours in packed.items():
        theirs = layers[name].weight
        assert torch.equal(ours.packed, theirs.data), name
        assert torch.equal(ours.dequantize(), dequantize_4bit(theirs.data, theirs.quant_state)), name


def test_qlora_logits_equal_the_reference(qlora_pair):
    ids, _, _ = token_rows(qlora_pair.config)
    with torch.no_grad():
        theirs = qlora_pair.reference(ids).logits
        with qlora_pair.reference.disable_adapter():
            their_base = qlora_pair.reference(ids).logits
    ours = our_logits(qlora_pair, ids)
    diff = (ours - theirs).abs().max().item()
    dense = load_weights(qlora_pair.directory, qlora_pair.config)
    from_dense = (our_logits(qlora_pair, ids, dense) - ours).abs().max().item()
    print(f"\nQLoRA vs transformers+bitsandbytes+PEFT: max abs logit diff {diff:.2e}; NF4 vs dense {from_dense:.2e}")
    assert diff < LOGIT_TOL
    assert (theirs - their_base).abs().max() > 1000 * LOGIT_TOL  # the adapter really contributes on their side
    assert (ours - our_logits(qlora_pair, ids, with_adapter=False)).abs().max() > 1000 * LOGIT_TOL  # and on ours
    assert from_dense > 1000 * LOGIT_TOL  # quantization matters: skipping it on either side would fail
    assert_nf4_double_quantized(qlora_pair.reference)  # and the reference ran on the float32 NF4 path


def test_qlora_loss_and_lora_grads_equal_the_reference(qlora_pair):
    ids, our_labels, their_labels = token_rows(qlora_pair.config)
    theirs = qlora_pair.reference(ids, labels=their_labels).loss
    theirs.backward()
    adapter = make_adapter(qlora_pair.tensors, SETTINGS, training=True, dtype=torch.float32)
    hidden = forward(qlora_pair.weights, qlora_pair.config, ids, lora=adapter)
    ours = token_cross_entropy(head_weight(qlora_pair.weights, qlora_pair.config), hidden, our_labels)
    ours.loss.backward()
    assert ours.count == 11  # 7 + 4 answer tokens, each predicted from the position before it
    loss_diff = (ours.loss - theirs).abs().item()
    params = dict(qlora_pair.reference.named_parameters())
    grad_diffs = {name: (t.grad - params[peft_name(name)].grad).abs().max().item()
                  for name, t in qlora_pair.tensors.items()}
    worst = max(grad_diffs, key=grad_diffs.get)
    print(f"\nQLoRA loss {ours.loss.item():.6f} vs reference {theirs.item():.6f} (diff {loss_diff:.2e}); "
          f"max abs LoRA grad diff {grad_diffs[worst]:.2e} ({worst})")
    assert loss_diff < LOSS_TOL
    assert grad_diffs[worst] < GRAD_TOL
    for name in lora_names("model.layers.0.self_attn.q_proj.weight") + lora_names("model.layers.1.mlp.down_proj.weight"):
        assert qlora_pair.tensors[name].grad.abs().max() > 1000 * GRAD_TOL  # real gradients, not zeros
