"""--compile: torch.compile of each micro-batch's forward (and so its backward) trains exactly like
the eager step, with bitsandbytes' 4-bit weights and our own autograd functions inside."""

import pytest
import torch
from torch._dynamo.utils import counters

from trainer.job.tiny import random_weights
from trainer.qwen3.config import TINY
from trainer.qwen3.lora import ALL_PROJECTIONS, LoraSettings, init_lora
from trainer.qwen3.quant import nf4_transform
from trainer.text.data import IGNORE_INDEX, Example, collate
from trainer.training.train import lora_batch_loss, train_step

pytestmark = pytest.mark.slow  # the first compiled step takes about 20 s on 2 CPU cores
LORA = LoraSettings(r=8, alpha=16.0, dropout=0.0, targets=ALL_PROJECTIONS)
WITH_DROPOUT = LoraSettings(r=8, alpha=16.0, dropout=0.1, targets=ALL_PROJECTIONS)


def rows(lengths: tuple[int, ...]) -> list[Example]:
    """Random rows whose last 3 tokens are the answer."""
    generator = torch.Generator().manual_seed(0)
    examples = []
    for length in lengths:
        ids = torch.randint(10, TINY.vocab_size, (length,), generator=generator).tolist()
        examples.append(Example(tuple(ids), tuple([IGNORE_INDEX] * (length - 4) + ids[length - 3:] + [IGNORE_INDEX])))
    return examples


def losses(compile_step: bool, quant: bool, lora: LoraSettings = LORA, steps: int = 4) -> list[float]:
    """Losses of `steps` steps on one batch; with dropout each step draws new masks from new row seeds."""
    weights = random_weights(TINY, seed=3)
    if quant:
        weights = {name: nf4_transform(name, tensor) for name, tensor in weights.items()}
    tensors = init_lora(TINY, lora, seed=4)
    params = list(tensors.values())
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    batch_loss = lora_batch_loss(weights, TINY, tensors, lora, torch.float32, compile_step=compile_step)
    # right padding: a causal call with a padded row
    batches = [collate(rows((12, 9, 12)), pad_id=0, dropout_seeds=(3 * step, 3 * step + 1, 3 * step + 2))
               for step in range(steps)]
    return [train_step(batch_loss, params, optimizer, [batch], 1.0).loss for batch in batches]


@pytest.mark.parametrize("quant, lora", [(False, LORA), (True, LORA), (True, WITH_DROPOUT)],
                         ids=["dense", "nf4", "nf4-dropout"])
def test_compiled_steps_equal_eager_steps_in_float32(quant, lora):
    """The forward compiles as three graphs, split only where causal_alone_suffices reads the mask into
    a Python bool to pick the attention: the 4-bit matmuls and the seeded dropout masks are inside
    the graphs, not each a break of its own, and new row seeds each step compile nothing again."""
    eager = losses(False, quant, lora)
    torch._dynamo.reset()
    counters.clear()
    compiled = losses(True, quant, lora)
    print(f"\neager {eager}\ncompiled {compiled}\ngraph breaks {dict(counters['graph_break'])}")
    assert eager[-1] < eager[0]
    assert all(abs(a - b) < 1e-5 for a, b in zip(eager, compiled))
    assert counters["stats"]["unique_graphs"] == 3
    assert list(counters["graph_break"]) and all("Tensor.item()" in reason for reason in counters["graph_break"])
