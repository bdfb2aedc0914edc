"""The same code on a CUDA GPU: parity with the CPU, NF4 kernels, checkpointing, and the memory bound.

Skipped without a GPU; scripts/gpu_check.sh runs them with `pytest -m cuda`.
"""

from dataclasses import replace

import pytest
import torch

from trainer.qwen3.config import TINY
from trainer.qwen3.lora import ALL_PROJECTIONS, LoraSettings, init_lora, make_adapter
from trainer.qwen3.model import forward
from trainer.qwen3.quant import nf4_transform, quantize_nf4
from trainer.qwen3.weights import expected_shapes
from trainer.text.data import Example, collate
from trainer.training.loss import token_cross_entropy
from trainer.training.train import lora_batch_loss, move_batch, train_step

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SMALL = replace(TINY, vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32)
LORA = LoraSettings(r=8, alpha=16.0, dropout=0.0, targets=ALL_PROJECTIONS)


def random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 CPU weights of SMALL: norms near 1, matrices with std 0.05."""
    generator = torch.Generator().manual_seed(seed)
    return {name: (1 + 0.1 * torch.rand(shape, generator=generator)) if len(shape) == 1
            else 0.05 * torch.randn(shape, generator=generator)
            for name, shape in expected_shapes(SMALL).items()}


def on(weights: dict, device: str, dtype: torch.dtype = torch.float32) -> dict:
    return {name: tensor.to(device, dtype) for name, tensor in weights.items()}


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def answer_batch(batch: int, length: int, answer: int):
    """Rows whose last `answer` labels are the next tokens, the rest ignored (an SFT batch)."""
    ids = random_ids(batch, length)
    examples = [Example(tuple(row.tolist()), tuple([-100] * (length - answer) + row[1 - answer:].tolist() + [-100]))
                for row in ids]
    return collate(examples, pad_id=0)


@pytest.mark.parametrize("second_row", ["right_padded", "packed"])  # the causal-only path, then the masked one
def test_forward_on_cuda_matches_cpu(second_row):
    weights, ids = random_weights(), random_ids(2, 33)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0 if second_row == "right_padded" else 2
    on_cpu = forward(weights, SMALL, ids, mask)
    on_gpu = forward(on(weights, "cuda"), SMALL, ids.cuda(), mask.cuda())
    assert (on_gpu.cpu() - on_cpu)[mask.bool()].abs().max() < 1e-4


def test_nf4_on_cuda_multiplies_like_its_dequantized_weight():
    weight = 0.05 * torch.randn(256, 128, generator=torch.Generator().manual_seed(2))
    packed = quantize_nf4(weight.cuda())
    dense = packed.dequantize()
    assert dense.shape == weight.shape
    assert (dense.cpu() - weight).abs().mean() < 0.15 * weight.abs().mean()  # 4 bits: about 8% typical error
    x = torch.randn(3, 5, 128, device="cuda")
    assert torch.allclose(packed.linear(x), x @ dense.T, atol=1e-4, rtol=1e-3)


def lora_gradients(weights: dict, checkpoint_layers: bool) -> dict[str, torch.Tensor]:
    lora = init_lora(SMALL, LORA, seed=3, device="cuda")
    with torch.no_grad():
        for name, tensor in lora.items():
            if "lora_B" in name:
                tensor.normal_(0, 0.02, generator=torch.Generator("cuda").manual_seed(4))  # B = 0 would hide A's gradient
    batch = move_batch(answer_batch(2, 64, 16), "cuda")
    batch_loss = lora_batch_loss(weights, SMALL, lora, LORA, torch.float32, ce_chunk=7,
                                 checkpoint_layers=checkpoint_layers)
    batch_loss(batch, batch.answer_token_count).loss.backward()
    return {name: tensor.grad for name, tensor in lora.items()}


def test_checkpointing_gives_the_same_lora_gradients_on_cuda():
    weights = on(random_weights(), "cuda")
    plain, checkpointed = lora_gradients(weights, False), lora_gradients(weights, True)
    assert all(torch.allclose(plain[name], checkpointed[name], atol=1e-6) for name in plain)
    assert all(g.abs().max() > 0 for g in plain.values())


def test_chunked_loss_never_holds_full_logits_on_cuda():
    vocab, positions, hidden_size, chunk = 151_936, 2_048, 64, 256
    head = (0.1 * torch.randn(vocab, hidden_size, device="cuda")).requires_grad_()
    hidden = torch.randn(1, positions, hidden_size, device="cuda", requires_grad=True)
    labels = torch.randint(0, vocab, (1, positions), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    token_cross_entropy(head, hidden, labels, chunk_size=chunk).loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    full_logits = positions * vocab * 4  # 1.24 GB
    print(f"\nextra {extra / 2**20:.0f} MiB; full logits {full_logits / 2**20:.0f} MiB")
    assert extra < full_logits / 4
    assert hidden.grad.abs().max() > 0


def test_nf4_lora_training_in_bfloat16_lowers_the_loss():
    weights = {name: nf4_transform(name, tensor) for name, tensor in on(random_weights(), "cuda", torch.bfloat16).items()}
    lora = init_lora(SMALL, LORA, seed=5, device="cuda")
    batch = move_batch(answer_batch(4, 48, 12), "cuda")
    batch_loss = lora_batch_loss(weights, SMALL, lora, LORA, torch.bfloat16, ce_chunk=64, checkpoint_layers=True)
    optimizer = torch.optim.AdamW(list(lora.values()), lr=1e-2, weight_decay=0.0)
    losses = [train_step(batch_loss, list(lora.values()), optimizer, [batch], grad_clip=1.0).loss for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.1, losses
    adapter = make_adapter(lora, LORA, training=False, dtype=torch.bfloat16)
    assert forward(weights, SMALL, batch.input_ids, batch.segment_ids, lora=adapter).dtype == torch.bfloat16
