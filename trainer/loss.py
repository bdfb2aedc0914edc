"""Cross-entropy on answer tokens only, without ever holding [tokens, vocab] logits at once.

Qwen3's vocabulary has 151,936 entries: float32 logits for 1,024 positions are 622 MB, and
their gradient as much again. The loss only needs the positions whose label is answer text,
so we gather those hidden states first, then project and score them a chunk at a time.

For each chunk, the gradient is computed right away and the chunk's logits are dropped:

    logits = h W^T                     h [n, H], W [V, H] (the tied embedding or lm_head)
    loss   = sum(logsumexp(logits) - logits[target])
    dloss/dlogits = softmax(logits) - onehot(target)          [n, V], then discarded
    dloss/dh = dlogits W      dloss/dW = dlogits^T h          kept: [n, H] and [V, H]

so at most one chunk of logits ([chunk, V] float32, under 256 MiB) exists at any time, and
nothing is computed twice.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from .data import IGNORE_INDEX
from .errors import TrainerError

CHUNK_BYTES = 256 * 2**20  # one chunk of float32 logits stays under 256 MiB


def default_ce_chunk(vocab_size: int) -> int:
    """Rows per chunk so that [rows, vocab] float32 logits fit in CHUNK_BYTES (441 for Qwen3)."""
    return max(1, CHUNK_BYTES // (4 * vocab_size))


@dataclass(frozen=True)
class LossParts:
    """The loss to backpropagate plus what it was made of, for metrics."""

    loss: Tensor  # scalar: summed token CE / normalizer
    correct: int  # answer tokens whose highest logit is the label
    count: int  # answer tokens scored


def chunk_loss_and_grads(hidden: Tensor, head: Tensor, targets: Tensor, want_head_grad: bool,
                         want_hidden_grad: bool = True) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """hidden [n, H], head [V, H], targets [n] -> (summed CE, correct count, d/dhidden [n, H], d/dhead [V, H])."""
    logits = (hidden @ head.T).float()  # [n, V], upcast: softmax in float32
    best_id = logits.argmax(dim=-1)  # [n]
    log_norm = torch.logsumexp(logits, dim=-1)  # [n]
    loss = (log_norm - logits.gather(1, targets[:, None])[:, 0]).sum()
    if not (want_hidden_grad or want_head_grad):
        return loss, (best_id == targets).sum(), None, None
    dlogits = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place: logits are not needed any more
    dlogits[torch.arange(len(targets), device=targets.device), targets] -= 1
    dlogits = dlogits.to(head.dtype)
    grad_head = dlogits.T @ hidden if want_head_grad else None  # [V, H]
    return loss, (best_id == targets).sum(), dlogits @ head, grad_head


class ChunkedCrossEntropy(torch.autograd.Function):
    """Summed CE of hidden [N, H] @ head^T against targets [N], with gradients made in forward."""

    @staticmethod
    def forward(ctx, hidden: Tensor, head: Tensor, targets: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        want_head_grad = ctx.needs_input_grad[1]
        grad_head = None
        for start in range(0, len(targets), chunk_size):
            part = slice(start, start + chunk_size)
            loss, hits, grad_hidden[part], head_part = chunk_loss_and_grads(
                hidden[part], head, targets[part], want_head_grad)
            total, correct = total + loss, correct + hits
            if want_head_grad:
                grad_head = head_part.float() if grad_head is None else grad_head + head_part
        ctx.save_for_backward(grad_hidden, grad_head)
        ctx.head_dtype = head.dtype
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx, grad_total: Tensor, _grad_correct: Tensor) -> tuple:
        grad_hidden, grad_head = ctx.saved_tensors
        head_grad = None if grad_head is None else (grad_head * grad_total).to(ctx.head_dtype)
        return grad_hidden * grad_total.to(grad_hidden.dtype), head_grad, None, None


def answer_loss(head: Tensor, hidden: Tensor, labels: Tensor, normalizer: int | None = None,
                chunk_size: int = 441) -> LossParts:
    """hidden [B, T, H], labels [B, T] (IGNORE_INDEX = no loss) -> summed CE over answer tokens / normalizer.

    `head` is the output matrix [V, H] (the tied embedding, or lm_head). normalizer defaults
    to this batch's answer-token count (a mean). Gradient accumulation passes the count of
    the whole accumulated batch, so splitting a batch into micro-batches changes nothing.
    """
    if hidden.shape[:2] != labels.shape:
        raise TrainerError(
            f"hidden has {hidden.shape[0] * hidden.shape[1]} positions {tuple(hidden.shape[:2])} "
            f"but the targets have {labels.numel()} {tuple(labels.shape)}"
        )
    keep = labels != IGNORE_INDEX  # [B, T]
    answer_hidden, targets = hidden[keep], labels[keep]  # [N, H], [N]
    if targets.numel() == 0:
        raise TrainerError("no answer tokens to score: every label is IGNORE_INDEX")
    if torch.is_grad_enabled() and (hidden.requires_grad or head.requires_grad):
        total, correct = ChunkedCrossEntropy.apply(answer_hidden, head, targets, chunk_size)
    else:  # evaluation: the same numbers, no gradients computed
        parts = [chunk_loss_and_grads(answer_hidden[i:i + chunk_size], head, targets[i:i + chunk_size], False, False)
                 for i in range(0, len(targets), chunk_size)]
        total, correct = sum(part[0] for part in parts), sum(part[1] for part in parts)
    return LossParts(total / (normalizer or targets.numel()), int(correct), int(targets.numel()))


def token_cross_entropy(project_to_logits: Tensor, hidden: Tensor, target_ids: Tensor, chunk_size: int = 441) -> Tensor:
    """The F# trainer's loss: hidden [B, T, H] -> logits -> mean CE against target_ids [B, T].

    The F# `projectToLogits` is a multiplication by the output matrix; we take that matrix
    [V, H] itself so projection and CE can run fused, chunk by chunk. Positions whose target
    is IGNORE_INDEX are skipped, so a caller may pass the whole shifted batch or, as the F#
    trainer does, only the response slice.
    """
    return answer_loss(project_to_logits, hidden, target_ids, chunk_size=chunk_size).loss
