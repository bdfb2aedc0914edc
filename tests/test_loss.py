"""The fused chunked cross-entropy against torch's cross_entropy on full logits, and its memory bound."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from trainer.errors import TrainerError
from trainer.training.loss import default_ce_chunk, kl_to_base, token_cross_entropy

IGNORE = -100  # torch's own default ignore_index, written independently of trainer.text.data


def make_case(seed: int, batch: int = 2, length: int = 7, hidden_size: int = 16, vocab: int = 50,
              dtype: torch.dtype = torch.float32):
    """hidden [B, T, H], head [V, H], labels [B, T] with some IGNORE positions (never all)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, hidden_size, generator=generator).to(dtype)
    head = (torch.randn(vocab, hidden_size, generator=generator) * 0.5).to(dtype)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[torch.rand(batch, length, generator=generator) < 0.4] = IGNORE
    labels[0, -1] = 3  # at least one answer token
    return hidden, head, labels


def reference_loss(hidden: torch.Tensor, head: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"):
    logits = (hidden @ head.T).float()  # [B, T, V]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction=reduction)


def grads(loss: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize("chunk", [1, 3, 5, 1000])
@pytest.mark.parametrize("head_trainable", [True, False])
def test_token_cross_entropy_equals_cross_entropy_on_full_logits(chunk, head_trainable):
    hidden, head, labels = make_case(seed=chunk)
    hidden.requires_grad_()
    head.requires_grad_(head_trainable)
    parts = token_cross_entropy(head, hidden, labels, chunk_size=chunk)
    expected = reference_loss(hidden, head, labels)
    inputs = (hidden, head) if head_trainable else (hidden,)
    ours, theirs = grads(parts.loss, *inputs), grads(expected, *inputs)
    diffs = [(parts.loss - expected).abs().item()] + [(a - b).abs().max().item() for a, b in zip(ours, theirs)]
    print(f"\nchunk {chunk} head grad {head_trainable}: max abs diff loss/grads {diffs}")
    assert parts.count == int((labels != IGNORE).sum())
    assert all(d < 1e-6 for d in diffs)
    assert all(g.abs().max() > 1e-3 for g in ours)
    if not head_trainable:
        assert head.grad is None


def test_token_cross_entropy_with_a_trainable_head_accumulates_in_grad():
    hidden, head, labels = make_case(seed=11)
    hidden.requires_grad_()
    head.requires_grad_()
    token_cross_entropy(head, hidden, labels, chunk_size=2).loss.backward()
    ours = (hidden.grad.clone(), head.grad.clone())
    hidden.grad, head.grad = None, None
    reference_loss(hidden, head, labels).backward()
    assert torch.allclose(ours[0], hidden.grad, atol=1e-6) and torch.allclose(ours[1], head.grad, atol=1e-6)


def test_gradient_through_an_upstream_scale():
    hidden, head, labels = make_case(seed=12)
    hidden.requires_grad_()
    ours = grads(3.5 * token_cross_entropy(head, hidden, labels, chunk_size=4).loss, hidden)[0]
    theirs = grads(3.5 * reference_loss(hidden, head, labels), hidden)[0]
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_token_cross_entropy_equals_cross_entropy():
    hidden, head, labels = make_case(seed=13, batch=3, length=5)
    value = token_cross_entropy(head, hidden, labels, chunk_size=2).loss
    assert abs(value.item() - reference_loss(hidden, head, labels).item()) < 1e-6


def test_bf16_inputs_are_close_to_the_float32_reference():
    hidden, head, labels = make_case(seed=14, hidden_size=32, vocab=200)
    hidden16, head16 = hidden.bfloat16().requires_grad_(), head.bfloat16().requires_grad_()
    parts = token_cross_entropy(head16, hidden16, labels, chunk_size=3)
    assert parts.loss.dtype == torch.float32
    ours = grads(parts.loss, hidden16, head16)
    assert ours[0].dtype == ours[1].dtype == torch.bfloat16
    hidden32, head32 = hidden16.detach().float().requires_grad_(), head16.detach().float().requires_grad_()
    expected = reference_loss(hidden32, head32, labels)
    theirs = grads(expected, hidden32, head32)
    loss_diff = abs(parts.loss.item() - expected.item())
    grad_diffs = [((a.float() - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, theirs)]
    print(f"\nbf16: loss diff {loss_diff:.2e}, relative grad diffs {grad_diffs}")
    assert loss_diff < 2e-2 * expected.item()
    assert all(d < 2e-2 for d in grad_diffs)


def test_correct_count_equals_argmax_matches():
    hidden, head, labels = make_case(seed=15, vocab=5)  # a small vocabulary, so some predictions are right
    keep = labels != IGNORE
    expected = int(((hidden @ head.T).argmax(-1)[keep] == labels[keep]).sum())
    assert 0 < expected < int(keep.sum())
    for chunk in (1, 4, 100):
        assert token_cross_entropy(head, hidden, labels, chunk_size=chunk).correct == expected
    labels_all_right = torch.where(keep, (hidden @ head.T).argmax(-1), labels)
    parts = token_cross_entropy(head, hidden, labels_all_right, chunk_size=3)
    assert parts.correct == parts.count == int(keep.sum())


def test_normalizer_makes_micro_batches_add_up_to_the_batch():
    hidden, head, labels = make_case(seed=16, batch=4, length=6)
    head.requires_grad_()
    total = int((labels != IGNORE).sum())
    whole_hidden = hidden.clone().requires_grad_()
    whole = token_cross_entropy(head, whole_hidden, labels, chunk_size=5)
    whole.loss.backward()
    whole_head_grad, head.grad = head.grad.clone(), None
    parts_hidden = hidden.clone().requires_grad_()
    losses = []
    for row in range(4):
        if (labels[row] != IGNORE).any():
            part = token_cross_entropy(head, parts_hidden[row:row + 1], labels[row:row + 1], normalizer=total, chunk_size=5)
            part.loss.backward()
            losses.append(part.loss.item())
    print(f"\nnormalizer: sum of parts - whole = {sum(losses) - whole.loss.item():.2e}")
    assert abs(sum(losses) - whole.loss.item()) < 1e-5
    assert abs(whole.loss.item() - reference_loss(hidden, head.detach(), labels).item()) < 1e-6
    assert torch.allclose(parts_hidden.grad, whole_hidden.grad, atol=1e-6)
    assert torch.allclose(head.grad, whole_head_grad, atol=1e-6)


def test_sum_normalizer_gives_the_summed_loss():
    hidden, head, labels = make_case(seed=17)
    summed = token_cross_entropy(head, hidden, labels, normalizer=1, chunk_size=2).loss
    assert abs(summed.item() - reference_loss(hidden, head, labels, reduction="sum").item()) < 1e-5


def test_shape_mismatch_names_both_sizes():
    hidden, head, _ = make_case(seed=18, batch=2, length=7)
    with pytest.raises(TrainerError, match=r"14.*\(2, 7\).*12.*\(2, 6\)"):
        token_cross_entropy(head, hidden, torch.zeros(2, 6, dtype=torch.long))


def test_all_ignored_labels_are_an_error():
    hidden, head, _ = make_case(seed=19)
    with pytest.raises(TrainerError, match="IGNORE_INDEX"):
        token_cross_entropy(head, hidden, torch.full((2, 7), IGNORE))


def test_default_chunk_for_qwen3():
    assert default_ce_chunk(151936) == 441
    assert 441 * 151936 * 4 < 256 * 2**20 <= 442 * 151936 * 4  # the largest chunk under 256 MiB
    assert default_ce_chunk(10**9) == 1
    assert default_ce_chunk(1000) * 1000 * 4 <= 256 * 2**20


def peak_cpu_bytes(run) -> int:
    """Peak of live CPU allocations while `run()` executes, from the profiler's allocation events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    assert events, "the profiler recorded no allocations"
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def test_peak_memory_stays_far_below_full_logits():
    vocab, positions, hidden_size, chunk = 50_000, 4_000, 16, 256
    generator = torch.Generator().manual_seed(20)
    head = (torch.randn(vocab, hidden_size, generator=generator) * 0.1).requires_grad_()
    hidden = torch.randn(1, positions, hidden_size, generator=generator).requires_grad_()
    labels = torch.randint(0, vocab, (1, positions), generator=generator)

    def step():
        token_cross_entropy(head, hidden, labels, chunk_size=chunk).loss.backward()

    peak = peak_cpu_bytes(step)
    full_logits = positions * vocab * 4
    print(f"\npeak extra memory {peak / 2**20:.0f} MiB; full logits {full_logits / 2**20:.0f} MiB; "
          f"one chunk {chunk * vocab * 4 / 2**20:.0f} MiB")
    assert peak < full_logits / 4
    assert peak < 4 * chunk * vocab * 4 + 2 * vocab * hidden_size * 4
    assert hidden.grad.abs().max() > 0 and head.grad.abs().max() > 0


def reference_kl(hidden: torch.Tensor, base_hidden: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Summed KL(base || model) from full logits and torch's kl_div; the base's distribution is a
    constant (the weights as they were), even where the head trains."""
    log_q = F.log_softmax((hidden @ head.T).float(), dim=-1)
    log_p = F.log_softmax((base_hidden @ head.T.detach()).float(), dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 3, 1000])
@pytest.mark.parametrize("head_trainable", [False, True])
def test_kl_to_base_equals_kl_div_on_full_logits_with_its_gradient(chunk, head_trainable):
    hidden, head, labels = make_case(seed=20 + chunk)
    base_hidden = hidden + 0.3 * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(chunk))
    kl_positions = labels != IGNORE
    kl_positions[1] = False  # a row without KL positions contributes nothing
    hidden.requires_grad_()
    head.requires_grad_(head_trainable)
    trained = (hidden, head) if head_trainable else (hidden,)
    ours = kl_to_base(head, hidden, base_hidden, kl_positions, normalizer=5, chunk_size=chunk)
    expected = reference_kl(hidden[kl_positions], base_hidden[kl_positions], head) / 5
    our_grads, their_grads = grads(ours, *trained), grads(expected, *trained)
    print(f"\nchunk {chunk}: KL {ours.item():.5f} vs {expected.item():.5f}, "
          f"max grad diff {max((o - t).abs().max().item() for o, t in zip(our_grads, their_grads)):.2e}")
    assert expected > 0.01 and abs(ours.item() - expected.item()) < 1e-6
    assert all(torch.allclose(o, t, atol=1e-6) for o, t in zip(our_grads, their_grads))
    assert our_grads[0][1].abs().max() == 0 and our_grads[0][0].abs().max() > 1e-3
    assert all(g.abs().max() > 1e-3 for g in our_grads)  # the head's gradient too, when it trains


def test_kl_to_base_is_zero_with_zero_gradient_when_the_model_is_the_base():
    hidden, head, labels = make_case(seed=31)
    hidden.requires_grad_()
    kl = kl_to_base(head, hidden, hidden.detach().clone(), labels != IGNORE, normalizer=1)
    (grad,) = grads(kl, hidden)
    assert abs(kl.item()) < 1e-6 and grad.abs().max() < 1e-6
