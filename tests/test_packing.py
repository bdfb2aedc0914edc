"""Packing and activation checkpointing change memory and speed, never the numbers."""

import torch

from trainer.job.tiny import random_weights
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3.lora import LoraSettings, init_lora
from trainer.text.data import IGNORE_INDEX, Example, collate, pack_examples
from trainer.training.train import lora_batch_loss

CONFIG = Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                     rope_theta=1e4, tie_word_embeddings=True, max_position_embeddings=128)
LORA = LoraSettings(r=4, alpha=8, dropout=0.0)


def make_examples(lengths: list[int], seed: int = 0) -> list[Example]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for length in lengths:
        ids = torch.randint(0, 300, (length,), generator=generator).tolist()
        answer = max(1, length // 3)
        labels = [IGNORE_INDEX] * (length - answer) + ids[length - answer:]
        examples.append(Example(tuple(ids), tuple(labels)))
    return examples


def loss_and_grads(batches, checkpoint_layers: bool = False):
    weights = random_weights(CONFIG, seed=1)
    lora = init_lora(CONFIG, LORA, seed=2)
    with torch.no_grad():  # nonzero B, so the adapters matter
        for name, tensor in lora.items():
            if "lora_B" in name:
                tensor.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    batch_loss = lora_batch_loss(weights, CONFIG, lora, LORA, torch.float32, ce_chunk=7,
                                 checkpoint_layers=checkpoint_layers)
    total = sum(batch.answer_token_count for batch in batches)
    loss = sum(batch_loss(batch, total).loss for batch in batches)
    loss.backward()
    return loss.item(), {name: t.grad.clone() for name, t in lora.items()}


def test_pack_examples_fills_rows_in_order():
    a, b, c = Example((1, 2, 3), (-100, 2, 3)), Example((4, 5), (-100, 5)), Example((6, 7, 8, 9), (7, 8, 9, 10))
    rows = pack_examples([a, b, c], seq_len=5)
    assert rows == [
        Example((1, 2, 3, 4, 5), (-100, 2, 3, -100, 5), positions=(0, 1, 2, 0, 1), segments=(1, 1, 1, 2, 2)),
        Example((6, 7, 8, 9), (7, 8, 9, 10), positions=(0, 1, 2, 3), segments=(1, 1, 1, 1)),
    ]
    batch = collate(rows, pad_id=0)
    assert batch.segment_ids.tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch.real_token_count == 9


def test_packing_keeps_the_preserved_positions_of_each_example():
    a = Example((1, 2, 3), (-100, 2, 3), kl_positions=(False, True, True))
    b = Example((4, 5), (-100, 5))
    (row,) = pack_examples([a, b], seq_len=5)
    assert row.kl_positions == (False, True, True, False, False)
    assert pack_examples([b, b], seq_len=5)[0].kl_positions == ()


def test_packed_loss_and_gradients_equal_unpacked():
    examples = make_examples([9, 5, 12, 3, 7, 6])
    unpacked_loss, unpacked_grads = loss_and_grads([collate(examples, pad_id=0)])
    packed = pack_examples(examples, seq_len=16)
    assert len(packed) < len(examples)
    packed_loss, packed_grads = loss_and_grads([collate(packed, pad_id=0)])
    assert abs(packed_loss - unpacked_loss) < 1e-5
    for name, grad in unpacked_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-6, rtol=1e-5)


def test_checkpointing_gives_the_same_loss_and_gradients():
    batches = [collate(make_examples([8, 11, 4]), pad_id=0)]
    plain_loss, plain_grads = loss_and_grads(batches)
    checkpointed_loss, checkpointed_grads = loss_and_grads(batches, checkpoint_layers=True)
    assert checkpointed_loss == plain_loss
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=0, rtol=0)
