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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import TrainerError
from ..text.data import IGNORE_INDEX

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
    kl: float | None = None  # KL(base || model) / normalizer, when --preserve-kl adds it (before beta)


ChunkScore = Callable[[Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor, Tensor | None]]


def chunk_cross_entropy(hidden: Tensor, head: Tensor, targets: Tensor,
                        want_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """hidden [n, H], head [V, H], targets [n] -> (summed CE, correct count, d loss / d logits [n, V] or None)."""
    logits = (hidden @ head.T).float()  # [n, V], upcast: softmax in float32
    top, best_id = logits.max(dim=-1)  # [n], [n]
    target_logit = logits.gather(1, targets[:, None])[:, 0]  # [n]
    # log-sum-exp written out, in place, so no second [n, V] buffer is made (torch.logsumexp makes one on CUDA)
    shifted_exp = logits.sub_(top[:, None]).exp_()  # [n, V]: exp(logits - top), logits are not needed any more
    total = shifted_exp.sum(dim=-1)  # [n]
    loss = (top + total.log() - target_logit).sum()
    if not want_grad:
        return loss, (best_id == targets).sum(), None
    dlogits = shifted_exp.div_(total[:, None])  # softmax
    dlogits[torch.arange(len(targets), device=targets.device), targets] -= 1
    return loss, (best_id == targets).sum(), dlogits


def chunk_kl(hidden: Tensor, head: Tensor, base_hidden: Tensor,
             want_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """KL(base || model) of one chunk: hidden, base_hidden [n, H], head [V, H] -> (summed KL,
    positions whose top token is the base's, d KL / d logits [n, V] or None).

    The base's distribution p comes from base_hidden (the same frozen weights, adapter off)
    and is a constant; the model's q from hidden. KL = sum p (log p - log q), and its
    gradient with respect to the model's logits is q - p: cross-entropy with soft targets.
    """
    log_q = torch.log_softmax((hidden @ head.T).float(), dim=-1)  # [n, V]
    log_p = torch.log_softmax((base_hidden @ head.T).float(), dim=-1)  # [n, V]
    same_top = (log_q.argmax(-1) == log_p.argmax(-1)).sum()
    p = log_p.exp()
    kl = (p * (log_p - log_q)).sum()
    return kl, same_top, log_q.exp_().sub_(p) if want_grad else None


class ChunkedLoss(torch.autograd.Function):
    """A summed loss of hidden [N, H] @ head^T, chunk by chunk, with its gradients made in forward.

    `score_chunk` is `chunk_cross_entropy` (against target ids [N]) or `chunk_kl` (against the
    base's hidden states [N, H]); `against` is sliced in step with `hidden`. From each chunk's
    d loss / d logits: d/dhidden = dlogits @ head, and d/dhead = dlogits^T @ hidden when the head trains.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, head: Tensor, against: Tensor, chunk_size: int,
                score_chunk: ChunkScore) -> tuple[Tensor, Tensor]:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_head = None
        for start in range(0, len(hidden), chunk_size):
            part = slice(start, start + chunk_size)
            loss, hits, dlogits = score_chunk(hidden[part], head, against[part], True)
            dlogits = dlogits.to(head.dtype)  # [n, V]
            total, correct, grad_hidden[part] = total + loss, correct + hits, dlogits @ head
            if ctx.needs_input_grad[1]:
                head_part = dlogits.T @ hidden[part]  # [V, H]
                grad_head = head_part.float() if grad_head is None else grad_head + head_part
        ctx.save_for_backward(grad_hidden, grad_head)
        ctx.head_dtype = head.dtype
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx, grad_total: Tensor, _grad_correct: Tensor) -> tuple:
        grad_hidden, grad_head = ctx.saved_tensors
        head_grad = None if grad_head is None else (grad_head * grad_total).to(ctx.head_dtype)
        return grad_hidden * grad_total.to(grad_hidden.dtype), head_grad, None, None, None


def chunked_sum(score_chunk: ChunkScore, hidden: Tensor, head: Tensor, against: Tensor,
                chunk_size: int | None) -> tuple[Tensor, int]:
    """(summed loss, hits) over chunks: through ChunkedLoss when a gradient is wanted, else plainly."""
    chunk_size = chunk_size or default_ce_chunk(head.shape[0])
    if torch.is_grad_enabled() and (hidden.requires_grad or head.requires_grad):
        total, correct = ChunkedLoss.apply(hidden, head, against, chunk_size, score_chunk)
        return total, int(correct)
    parts = [score_chunk(hidden[i:i + chunk_size], head, against[i:i + chunk_size], False)
             for i in range(0, len(hidden), chunk_size)]
    return sum(part[0] for part in parts), int(sum(part[1] for part in parts))


def token_cross_entropy(head: Tensor, hidden: Tensor, target_ids: Tensor, normalizer: int | None = None,
                        chunk_size: int | None = None) -> LossParts:
    """The F# trainer's loss: hidden [B, T, H] -> logits -> CE against target_ids [B, T].

    The F# `projectToLogits` is a multiplication by the output matrix `head` [V, H] (the tied
    embedding, or lm_head); taking the matrix itself lets projection and CE run fused, a chunk at
    a time. Positions whose target is IGNORE_INDEX (prompt, padding) are skipped, which is the F#
    narrowing of hidden to the response slice, done for a whole right-padded batch at once.
    The summed CE is divided by `normalizer`: by default this batch's answer-token count (the F#
    mean); gradient accumulation passes the count of the whole accumulated batch, so splitting a
    batch into micro-batches changes nothing. `.loss` is what backward runs on.
    """
    if hidden.shape[:2] != target_ids.shape:
        raise TrainerError(
            f"hidden has {hidden.shape[0] * hidden.shape[1]} positions {tuple(hidden.shape[:2])} "
            f"but the targets have {target_ids.numel()} {tuple(target_ids.shape)}"
        )
    graded = target_ids != IGNORE_INDEX  # [B, T]
    answer_hidden, targets = hidden[graded], target_ids[graded]  # [N, H], [N]
    if targets.numel() == 0:
        raise TrainerError("no answer tokens to score: every target is IGNORE_INDEX")
    total, correct = chunked_sum(chunk_cross_entropy, answer_hidden, head, targets, chunk_size)
    return LossParts(total / (normalizer or targets.numel()), correct, int(targets.numel()))


def kl_to_base(head: Tensor, hidden: Tensor, base_hidden: Tensor, kl_positions: Tensor, normalizer: int,
               chunk_size: int | None = None) -> Tensor:
    """Summed KL(base || model) over kl_positions / normalizer.

    hidden and base_hidden [B, T, H] come from the same frozen weights with the adapter on and
    off; kl_positions [B, T] bool marks where the base's distribution is kept (the answer
    positions of rehearsal rows). Dividing by the batch's answer-token count, like the
    cross-entropy, keeps the two terms on one scale: with beta = 1 a kept position weighs as
    much as a trained one.
    """
    total, _ = chunked_sum(chunk_kl, hidden[kl_positions], head, base_hidden[kl_positions], chunk_size)
    return total / normalizer


TokenLoss = Callable[..., LossParts]  # (head, hidden, target_ids, normalizer, chunk_size) -> LossParts
LOSSES: dict[str, TokenLoss] = {"ce": token_cross_entropy}  # --loss: name -> the loss of a micro-batch
