"""NF4: 4-bit storage, dequantization against the NF4 code book, the packed linear, and QLoRA parity."""

import torch

from trainer.job.tiny import random_weights
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3.lora import LoraSettings, init_lora, make_adapter
from trainer.qwen3.model import forward, project_to_logits
from trainer.qwen3.quant import NF4Weight, nf4_transform, quant_transform, quantize_nf4

# The 16 NF4 levels from the QLoRA paper (Dettmers et al. 2023, appendix E), written out by hand.
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230850219727, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
])

SMALL = Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                    rope_theta=1e4, tie_word_embeddings=True, max_position_embeddings=128)


def normal_matrix(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(seed)) * 0.05


def reference_nf4_roundtrip(weight: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Plain NF4 with exact block absmax: each value -> nearest level * absmax of its 64-block."""
    blocks = weight.reshape(-1, block)  # [n_blocks, 64]
    absmax = blocks.abs().amax(dim=1, keepdim=True)  # [n_blocks, 1]
    nearest = (blocks / absmax)[..., None].sub(NF4_LEVELS).abs().argmin(dim=-1)  # [n_blocks, 64]
    return (NF4_LEVELS[nearest] * absmax).reshape(weight.shape)


def test_nf4_stores_four_bits_per_value():
    weight = normal_matrix(256, 512)
    packed = quantize_nf4(weight)
    assert isinstance(packed, NF4Weight)
    assert packed.shape == (256, 512)
    assert packed.packed.dtype == torch.uint8
    assert packed.packed.numel() == 256 * 512 // 2
    per_value = packed.nbytes / weight.numel()
    print(f"\nNF4 bytes per value: {per_value:.4f} (bf16: 2)")
    assert 0.5 < per_value <= 0.53
    assert packed.nbytes < weight.numel() * 2 / 3.5  # well below bf16


def test_dequantize_matches_the_nf4_code_book():
    weight = normal_matrix(128, 256, seed=1)
    dense = quantize_nf4(weight).dequantize()
    assert dense.shape == weight.shape and dense.dtype == torch.float32
    relative = ((dense - weight).norm() / weight.norm()).item()
    # Double quantization stores the block scales in 8 bits, so levels * absmax is matched closely, not exactly.
    reference = reference_nf4_roundtrip(weight)
    scale_error = ((dense - reference).abs().max() / weight.abs().max()).item()
    print(f"\nNF4 relative error {relative:.4f}; vs exact-absmax reference {scale_error:.2e} of max |w|")
    assert relative < 0.12  # 16 levels on a normal: about 10 % RMS error
    assert scale_error < 0.01
    assert len(dense.unique()) > 16  # every block has its own scale


def test_packed_linear_equals_dense_matmul_with_gradients():
    weight = normal_matrix(48, 64, seed=2)
    packed = quantize_nf4(weight)
    dense = packed.dequantize()
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    upstream = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(4))
    y = packed.linear(x)
    y_ref = x_ref @ dense.T
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    print(f"\npacked linear: max abs diff {(y - y_ref).abs().max():.2e}, grad {(x.grad - x_ref.grad).abs().max():.2e}")
    assert y.shape == (2, 5, 48)
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert x.grad.abs().max() > 0.1


def test_nf4_transform_quantizes_only_projections():
    weights = random_weights(SMALL, seed=5)
    transformed = {name: nf4_transform(name, tensor) for name, tensor in weights.items()}
    packed = sorted(name for name, value in transformed.items() if isinstance(value, NF4Weight))
    assert len(packed) == 7 * SMALL.num_hidden_layers
    assert all(name.endswith("_proj.weight") for name in packed)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight",
                 "model.layers.1.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight"):
        assert isinstance(transformed[name], torch.Tensor) and torch.equal(transformed[name], weights[name])
    assert transformed["model.layers.1.mlp.down_proj.weight"].shape == (32, 64)
    assert quant_transform("nf4") is nf4_transform and quant_transform("none") is None


def test_qlora_forward_equals_lora_over_dequantized_weights():
    weights = random_weights(SMALL, seed=6)
    quantized = {name: nf4_transform(name, tensor) for name, tensor in weights.items()}
    dequantized = {name: v.dequantize() if isinstance(v, NF4Weight) else v for name, v in quantized.items()}
    settings = LoraSettings(r=4, alpha=8.0, dropout=0.0)
    tensors = init_lora(SMALL, settings, seed=7)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, t in tensors.items():
            if "lora_B" in name:
                t.copy_(torch.randn(t.shape, generator=generator) * 0.3)
    adapter = make_adapter(tensors, settings, training=False, dtype=torch.float32)
    ids = torch.randint(0, SMALL.vocab_size, (2, 9), generator=generator)
    with torch.no_grad():
        qlora = project_to_logits(quantized, SMALL, forward(quantized, SMALL, ids, lora=adapter))
        lora = project_to_logits(dequantized, SMALL, forward(dequantized, SMALL, ids, lora=adapter))
        base = project_to_logits(dequantized, SMALL, forward(dequantized, SMALL, ids))
    diff = (qlora - lora).abs().max().item()
    print(f"\nQLoRA vs LoRA over dequantized weights: max abs logit diff {diff:.2e}")
    assert diff < 1e-5
    assert (lora - base).abs().max() > 1e-2  # the adapter really changed the output


def test_packed_linear_keeps_the_compute_dtype():
    dtype = torch.bfloat16
    packed = quantize_nf4(normal_matrix(32, 64, seed=9).to(dtype))
    x = torch.randn(3, 64, dtype=dtype, generator=torch.Generator().manual_seed(10))
    y = packed.linear(x)
    assert y.dtype == dtype
    reference = x.float() @ packed.dequantize().float().T
    assert torch.allclose(y.float(), reference, atol=2e-2, rtol=2e-2)
