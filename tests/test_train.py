"""train_step and its parts: scrubbing, skipping, clipping, accumulation, the LR schedule and data order."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.errors import TrainerError
from trainer.job.tiny import random_weights
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3 import memory
from trainer.qwen3.lora import LoraSettings, init_lora, make_adapter
from trainer.qwen3.model import forward, project_to_logits
from trainer.text.data import Example, collate
from trainer.training import train
from trainer.training.loss import LossParts
from trainer.training.train import (LoopSettings, checkpoint_due, full_batch_loss, learning_rate, lora_batch_loss,
                                    run_training, scrub_non_finite_grads, step_batches, step_indices, train_step)

IGNORE = -100
PAD = 0
SMALL = Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                    rope_theta=1e4, tie_word_embeddings=True, max_position_embeddings=128)
ANSWER = (17, 42, 99, 5)  # every example's answer: learnable in a few steps
NO_DROPOUT = LoraSettings(r=4, alpha=8.0, dropout=0.0)


def examples(count: int, seed: int = 0) -> list[Example]:
    """Random prompts of different lengths followed by ANSWER; labels only on the answer."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        prompt = torch.randint(1, SMALL.vocab_size, (3 + i % 4,), generator=generator).tolist()
        full = prompt + list(ANSWER)
        labels = [IGNORE] * (len(prompt) - 1) + list(ANSWER)
        rows.append(Example(tuple(full[:-1]), tuple(labels)))
    return rows


def lora_setup(seed: int = 1, random_b: bool = False, settings: LoraSettings = NO_DROPOUT):
    """A frozen random base (embedding std 0.2, so logits can grow) + LoRA tensors + the batch loss."""
    weights = random_weights(SMALL, seed)
    weights["model.embed_tokens.weight"] *= 10
    tensors = init_lora(SMALL, settings, seed=seed + 1)
    if random_b:
        generator = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            for name, t in tensors.items():
                if name.endswith("lora_B.weight"):
                    t.copy_(torch.randn(t.shape, generator=generator) * 0.1)
    return weights, tensors, lora_batch_loss(weights, SMALL, tensors, settings, torch.float32, ce_chunk=7)


def reference_lora_loss(weights, tensors, batch, settings: LoraSettings = NO_DROPOUT) -> torch.Tensor:
    """Mean CE over answer tokens from full logits and torch's cross_entropy."""
    adapter = make_adapter(tensors, settings, training=False, dtype=torch.float32)
    hidden = forward(weights, SMALL, batch.input_ids, batch.segment_ids, batch.position_ids, adapter)
    logits = project_to_logits(weights, SMALL, hidden)  # [B, T, V]
    return F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE)


def total_norm(grads) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))


def adamw(params, lr=1e-2):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


# ---------------------------------------------------------------------------
# Scrubbing non-finite gradients
# ---------------------------------------------------------------------------


def test_scrub_counts_and_zeroes_nan_and_inf():
    a = torch.zeros(2, 3, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    untouched = torch.zeros(2, requires_grad=True)  # no gradient at all
    a.grad = torch.tensor([[1.0, float("nan"), -2.5], [float("inf"), 0.0, 3.0]])
    b.grad = torch.tensor([float("-inf"), 7.0, float("nan"), -1e30])
    assert scrub_non_finite_grads([a, b, untouched]) == 4
    assert torch.equal(a.grad, torch.tensor([[1.0, 0.0, -2.5], [0.0, 0.0, 3.0]]))
    assert torch.equal(b.grad, torch.tensor([0.0, 7.0, 0.0, -1e30]))
    assert untouched.grad is None
    assert scrub_non_finite_grads([a, b]) == 0


# ---------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------


def test_lora_train_steps_lower_the_loss():
    weights, tensors, batch_loss = lora_setup()
    batch = collate(examples(8), PAD)
    with torch.no_grad():
        before = reference_lora_loss(weights, tensors, batch).item()
    params = list(tensors.values())
    optimizer = adamw(params, lr=2e-2)
    results = [train_step(batch_loss, params, optimizer, [batch], grad_clip=1.0) for _ in range(20)]
    with torch.no_grad():
        after = reference_lora_loss(weights, tensors, batch).item()
    print(f"\nLoRA: loss {before:.3f} -> {after:.3f}")
    assert abs(results[0].loss - before) < 1e-5  # the step reports the loss before its update
    assert after < 0.5 * before
    assert not any(r.skipped for r in results) and all(r.scrubbed == 0 for r in results)
    assert results[-1].answer_tokens == 8 * len(ANSWER)
    assert results[-1].tokens == int(batch.segment_ids.sum())
    assert 0 <= results[-1].correct <= results[-1].answer_tokens


def test_bf16_lora_training_lowers_the_loss_like_float32():
    """--dtype auto trains in bf16 on CPUs that multiply it natively: the frozen base and the forward
    run in bf16 while the LoRA masters, AdamW and the loss stay float32. The first six steps follow
    the float32 run's losses within 0.01 per answer token (bf16 keeps 8 bits of mantissa, about 0.4%
    per operation; measured: 0.004 at most); after that this high learning rate makes both runs
    oscillate and their paths part (gaps up to 0.35 of about 2), but both end far below the start
    and within 25% of each other (measured 1.65 vs 1.41)."""
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        weights, tensors, _ = lora_setup()
        weights = {name: t.to(dtype) for name, t in weights.items()}
        batch_loss = lora_batch_loss(weights, SMALL, tensors, NO_DROPOUT, dtype, ce_chunk=7)
        params = list(tensors.values())
        optimizer = adamw(params, lr=2e-2)
        runs[dtype] = [train_step(batch_loss, params, optimizer, [collate(examples(8), PAD)], 1.0).loss
                       for _ in range(20)]
        assert all(t.dtype == torch.float32 for t in params)
        assert all(v.dtype == torch.float32 for state in optimizer.state.values() for v in state.values())
    full, half = runs[torch.float32], runs[torch.bfloat16]
    print(f"\nfloat32 {full[0]:.4f} -> {full[-1]:.4f}; bf16 {half[0]:.4f} -> {half[-1]:.4f}; "
          f"largest gap in the first six steps {max(abs(a - b) for a, b in zip(full[:6], half[:6])):.4f}")
    assert max(abs(a - b) for a, b in zip(full[:6], half[:6])) < 0.01
    assert half[-1] < 0.3 * half[0] and abs(half[-1] - full[-1]) < 0.25 * full[-1]


def test_preserve_kl_adds_beta_times_the_kl_to_the_base_on_marked_rows_only():
    """--preserve-kl: loss = CE + beta * KL(base || model) / answer tokens, the base being the same
    weights with the adapter off, counted only on the rows marked `preserve`."""
    weights, tensors, _ = lora_setup(random_b=True)
    rows = examples(4)
    marked = [rows[0], Example(rows[1].input_ids, rows[1].labels, kl_positions=tuple(l != IGNORE for l in rows[1].labels))]
    batch = collate(marked + rows[2:], PAD)
    plain = lora_batch_loss(weights, SMALL, tensors, NO_DROPOUT, torch.float32, ce_chunk=7)(batch, 16)
    kl_loss = lora_batch_loss(weights, SMALL, tensors, NO_DROPOUT, torch.float32, ce_chunk=7, preserve_kl=3.0)
    ours = kl_loss(batch, 16)
    with torch.no_grad():
        row = batch.input_ids[1:2], batch.segment_ids[1:2], batch.position_ids[1:2]
        adapter = make_adapter(tensors, NO_DROPOUT, training=False, dtype=torch.float32)
        keep = batch.kl_positions[1]
        log_q = F.log_softmax(project_to_logits(weights, SMALL, forward(weights, SMALL, *row, adapter))[0, keep], -1)
        log_p = F.log_softmax(project_to_logits(weights, SMALL, forward(weights, SMALL, *row))[0, keep], -1)
        kl = F.kl_div(log_q, log_p, log_target=True, reduction="sum").item()
    print(f"\nCE {plain.loss.item():.4f}, KL on the marked row {kl:.4f}, with beta 3: {ours.loss.item():.4f}")
    assert kl > 0.01 and abs(ours.loss.item() - (plain.loss.item() + 3.0 * kl / 16)) < 1e-5
    assert (ours.correct, ours.count) == (plain.correct, plain.count)
    assert abs(ours.kl - kl / 16) < 1e-6 and plain.kl is None
    step = train_step(kl_loss, list(tensors.values()), adamw(list(tensors.values())), [batch], grad_clip=1.0)
    assert abs(step.kl_to_base - kl / 16) < 1e-6 and abs(step.loss - ours.loss.item()) < 1e-5
    unmarked = collate(rows, PAD)
    assert kl_loss(unmarked, 16).loss.item() == lora_batch_loss(
        weights, SMALL, tensors, NO_DROPOUT, torch.float32, ce_chunk=7)(unmarked, 16).loss.item()


def test_full_train_steps_lower_the_loss():
    masters = {name: t.requires_grad_() for name, t in random_weights(SMALL, 3).items()}
    batch = collate(examples(8, seed=4), PAD)
    params = list(masters.values())
    optimizer = adamw(params, lr=3e-3)
    results = [train_step(full_batch_loss(masters, SMALL, torch.float32, 5), params, optimizer, [batch], 1.0)
               for _ in range(20)]
    with torch.no_grad():
        logits = project_to_logits(masters, SMALL, forward(masters, SMALL, batch.input_ids, batch.segment_ids))
        after = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE).item()
    print(f"\nfull: loss {results[0].loss:.3f} -> {after:.3f}")
    assert after < 0.5 * results[0].loss
    assert results[-1].correct > 0


# ---------------------------------------------------------------------------
# Non-finite gradients and losses
# ---------------------------------------------------------------------------


def test_nan_gradient_entries_are_scrubbed_and_counted():
    batch = collate(examples(4), PAD)
    _, clean_tensors, clean_loss = lora_setup(random_b=True)
    clean_params = list(clean_tensors.values())
    train_step(clean_loss, clean_params, torch.optim.SGD(clean_params, lr=0.0), [batch], grad_clip=1e9)

    _, tensors, batch_loss = lora_setup(random_b=True)
    name = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"
    bad = [(0, 0), (3, 1), (5, 2)]

    def poison(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        for (row, col), value in zip(bad, (float("nan"), float("inf"), float("-inf"))):
            grad[row, col] = value
        return grad

    tensors[name].register_hook(poison)
    params = list(tensors.values())
    result = train_step(batch_loss, params, adamw(params), [batch], grad_clip=1e9)
    assert result.scrubbed == 3 and not result.skipped
    assert math.isfinite(result.grad_norm) and math.isfinite(result.loss)
    expected = clean_tensors[name].grad.clone()
    for row, col in bad:
        expected[row, col] = 0.0
    assert torch.equal(tensors[name].grad, expected)
    assert all(torch.isfinite(p).all() for p in params)
    assert not torch.equal(tensors[name], clean_tensors[name])  # the update happened


@pytest.mark.parametrize("blow_up", [float("nan"), float("inf")])
def test_non_finite_loss_skips_the_step_and_leaves_everything_untouched(blow_up):
    _, tensors, batch_loss = lora_setup(random_b=True)
    params = list(tensors.values())
    optimizer = adamw(params)
    batch = collate(examples(4), PAD)

    def exploding(micro_batch, normalizer):
        parts = batch_loss(micro_batch, normalizer)
        return LossParts(parts.loss * blow_up, parts.correct, parts.count)

    before = {name: t.detach().clone() for name, t in tensors.items()}
    first = train_step(exploding, params, optimizer, [batch], grad_clip=1.0)
    assert first.skipped and not math.isfinite(first.loss)
    assert first.scrubbed > 0
    assert optimizer.state == {} or all(len(s) == 0 for s in optimizer.state.values())
    assert all(torch.equal(tensors[name], before[name]) for name in tensors)

    assert not train_step(batch_loss, params, optimizer, [batch], grad_clip=1.0).skipped
    snapshot = {name: t.detach().clone() for name, t in tensors.items()}
    state = {id(p): {k: v.clone() for k, v in optimizer.state[p].items()} for p in params}
    second = train_step(exploding, params, optimizer, [batch], grad_clip=1.0)
    assert second.skipped
    assert all(torch.equal(tensors[name], snapshot[name]) for name in tensors)
    assert all(torch.equal(optimizer.state[p][k], v) for p in params for k, v in state[id(p)].items())


# ---------------------------------------------------------------------------
# Clipping and accumulation
# ---------------------------------------------------------------------------


def test_clipping_bounds_the_norm_and_reports_the_norm_before_clipping():
    weights, tensors, batch_loss = lora_setup(random_b=True)
    batch = collate(examples(4, seed=5), PAD)
    params = list(tensors.values())
    reference = torch.autograd.grad(reference_lora_loss(weights, tensors, batch), params)
    unclipped = total_norm(reference)
    clip = unclipped / 10
    result = train_step(batch_loss, params, torch.optim.SGD(params, lr=0.0), [batch], grad_clip=clip)
    clipped = total_norm(p.grad for p in params)
    print(f"\nclipping: norm before {result.grad_norm:.6f} (reference {unclipped:.6f}), after {clipped:.6f}")
    assert result.grad_norm == pytest.approx(unclipped, rel=1e-5)
    assert clipped <= clip + 1e-6
    assert clipped == pytest.approx(clip, rel=1e-4)
    direction = [p.grad / clipped for p in params]
    assert all(torch.allclose(d, r / unclipped, atol=1e-6) for d, r in zip(direction, reference))


def test_four_micro_batches_of_one_equal_one_batch_of_four():
    rows = examples(4, seed=6)  # different lengths: the batch of four is padded
    answer_tokens = sum(sum(label != IGNORE for label in row.labels) for row in rows)
    results, learned, grads = [], [], []
    for micro_batches in ([collate(rows[i:i + 1], PAD) for i in range(4)], [collate(rows, PAD)]):
        weights, tensors, batch_loss = lora_setup(random_b=True)
        params = list(tensors.values())
        results.append(train_step(batch_loss, params, adamw(params), micro_batches, grad_clip=1e9))
        learned.append({name: t.detach().clone() for name, t in tensors.items()})
        grads.append({name: t.grad.clone() for name, t in tensors.items()})
    fresh_weights, fresh, _ = lora_setup(random_b=True)
    reference = torch.autograd.grad(reference_lora_loss(fresh_weights, fresh, collate(rows, PAD)), list(fresh.values()))
    reference_diff = max((grads[1][n] - r).abs().max().item() for n, r in zip(fresh, reference))
    grad_diff = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
    weight_diff = max((learned[0][n] - learned[1][n]).abs().max().item() for n in learned[0])
    print(f"\naccumulation: max abs grad diff {grad_diff:.2e}, weight diff {weight_diff:.2e}, "
          f"vs full-logits reference {reference_diff:.2e}")
    assert results[0].answer_tokens == results[1].answer_tokens == answer_tokens
    assert results[0].loss == pytest.approx(results[1].loss, abs=1e-5)
    assert grad_diff < 1e-6 and weight_diff < 1e-5 and reference_diff < 1e-6
    assert max((learned[1][n] - fresh[n]).abs().max().item() for n in fresh) > 1e-3  # the step moved the weights


def gradients_of(batch_loss, params, micro_batches) -> list[torch.Tensor]:
    """The summed gradient of the micro-batches, each loss divided by the step's answer tokens."""
    normalizer = sum(batch.answer_token_count for batch in micro_batches)
    for batch in micro_batches:
        batch_loss(batch, normalizer).loss.backward()
    return [p.grad for p in params]


def test_lora_dropout_gradients_do_not_depend_on_the_split_or_on_recomputation(monkeypatch):
    """With dropout on, 2 processes x batch 2, 1 x 2 micro-batches of 2 and 1 x batch 4 give the
    same gradient, and so does recomputing each layer: a row's mask comes from (seed, step, its
    place in the step), never from a generator that runs on in one process."""
    dropout = LoraSettings(r=4, alpha=8.0, dropout=0.3)
    loop = LoopSettings(steps=4, batch_size=4, grad_accum=1, lr=1e-2, warmup_steps=0, grad_clip=1.0,
                        weight_decay=0.0, seed=5, pad_id=PAD)
    rows = examples(8, seed=3)

    def batches_of(rank: int, world: int, batch_size: int, grad_accum: int = 1) -> list:
        monkeypatch.setattr(train, "rank_and_world", lambda: (rank, world))
        return step_batches(rows, 2, LoopSettings(**{**loop.__dict__, "batch_size": batch_size, "grad_accum": grad_accum}))

    whole = batches_of(0, 1, 4)
    splits = {"2 processes x 2": batches_of(0, 2, 2) + batches_of(1, 2, 2), "2 micro-batches of 2": batches_of(0, 1, 2, 2)}
    assert len(set(whole[0].dropout_seeds)) == 4
    for split in splits.values():
        assert sum((b.dropout_seeds for b in split), ()) == whole[0].dropout_seeds

    def grads(batches, checkpoint_layers=False):
        weights, tensors, _ = lora_setup(random_b=True, settings=dropout)
        loss = lora_batch_loss(weights, SMALL, tensors, dropout, torch.float32, 7, checkpoint_layers)
        return gradients_of(loss, list(tensors.values()), batches)

    expected = grads(whole)
    for name, batches in splits.items():
        assert max((g - e).abs().max().item() for g, e in zip(grads(batches), expected)) < 1e-6, name
    assert max((g - e).abs().max().item() for g, e in zip(grads(whole, checkpoint_layers=True), expected)) < 1e-6
    weights, tensors, no_dropout = lora_setup(random_b=True)
    undropped = gradients_of(no_dropout, list(tensors.values()), whole)
    assert max((g - e).abs().max().item() for g, e in zip(undropped, expected)) > 1e-3  # dropout really acts


def kept_storages(batch_loss, batch, monkeypatch) -> dict[int, tuple[tuple[int, ...], torch.dtype]]:
    """{storage address: (shape, dtype)} of every tensor autograd keeps for backward in one forward: what
    trainer.qwen3.memory's pack hook keeps as it is, and what the recipes it keeps instead hold."""
    kept = {}

    def record(value) -> None:
        if isinstance(value, torch.Tensor):
            kept.setdefault(value.untyped_storage().data_ptr(), (tuple(value.shape), value.dtype))
        elif isinstance(value, memory.Recipe):
            for argument in value.arguments:
                record(argument)

    def spy(notes, saved):
        packed = keep(notes, saved)
        record(packed if isinstance(packed, torch.Tensor) else packed.recipe)
        return packed

    keep = memory.keep
    with monkeypatch.context() as patch:
        patch.setattr(memory, "keep", spy)
        batch_loss(batch, batch.answer_token_count)
    return kept


def test_training_keeps_no_copy_of_the_adapters_inputs(monkeypatch):
    """Per layer autograd keeps gate and up (SwiGLU's backward needs them) but not SwiGLU's output, and
    dropout adds no kept copy: each adapter's input is made again in backward (trainer.qwen3.memory)."""
    batch = step_batches(examples(4), 1, LoopSettings(steps=1, batch_size=4, grad_accum=1, lr=1e-2, warmup_steps=0,
                                                     grad_clip=1.0, weight_decay=0.0, seed=5, pad_id=PAD))[0]
    kept = {}
    for dropout in (0.0, 0.3):
        weights, tensors, _ = lora_setup(settings=LoraSettings(r=4, alpha=8.0, dropout=dropout))
        loss = lora_batch_loss(weights, SMALL, tensors, LoraSettings(r=4, alpha=8.0, dropout=dropout), torch.float32, 7)
        kept[dropout] = kept_storages(loss, batch, monkeypatch)
    widest = [shape for shape, _ in kept[0.0].values() if len(shape) == 3 and shape[-1] == SMALL.intermediate_size]
    assert len(widest) == 2 * SMALL.num_hidden_layers
    numbers = {dropout: sorted(shape for shape, dtype in found.values() if dtype.is_floating_point)
               for dropout, found in kept.items()}
    assert numbers[0.3] == numbers[0.0]  # dropout keeps only its masks, one bool per input element,
    seeds = [shape for shape, dtype in kept[0.3].values() if dtype == torch.int64]
    assert seeds == [(4,)]  # and, in the recipes that redraw them, the batch's one seed per row
    masks = [shape for shape, dtype in kept[0.3].values() if dtype == torch.bool]
    # one per projection, but layer 0's q, k and v, whose input (the frozen embedding, normed) needs no gradient
    assert len(masks) == 7 * SMALL.num_hidden_layers - 3
    assert not any(dtype == torch.bool for _, dtype in kept[0.0].values())


# ---------------------------------------------------------------------------
# Schedule and data order
# ---------------------------------------------------------------------------


def test_checkpoint_due_every_save_every_steps_and_where_stop_after_ends_the_run():
    loop = LoopSettings(steps=10, batch_size=1, grad_accum=1, lr=1e-3, warmup_steps=0, grad_clip=1.0,
                        weight_decay=0.0, seed=0, pad_id=PAD, save_every=4)
    assert [n for n in range(1, 11) if checkpoint_due(n, 10, loop)] == [4, 8]
    assert [n for n in range(1, 7) if checkpoint_due(n, 6, loop)] == [4, 6]  # --stop-after 6: saved to resume from
    never = LoopSettings(**{**loop.__dict__, "save_every": 0})
    assert [n for n in range(1, 11) if checkpoint_due(n, 10, never)] == []
    assert [n for n in range(1, 11) if checkpoint_due(n, 3, never)] == [3]


def test_learning_rate_warmup_peak_and_floor():
    peak, warmup, total = 1e-3, 10, 100
    rates = [learning_rate(step, total, peak, warmup) for step in range(total)]
    for step in range(warmup):
        assert rates[step] == pytest.approx(peak * (step + 1) / warmup, rel=1e-12)
    assert rates[0] == pytest.approx(peak / warmup, rel=1e-12)
    assert rates[warmup - 1] == pytest.approx(peak, rel=1e-12) and rates[warmup] == pytest.approx(peak, rel=1e-12)
    assert rates[-1] == pytest.approx(0.1 * peak, rel=1e-12)
    decay = rates[warmup:]
    assert all(later < earlier for earlier, later in zip(decay, decay[1:]))
    assert min(rates) == pytest.approx(min(0.1 * peak, peak / warmup), rel=1e-12)
    assert learning_rate(99, 100, 1.0, 10, floor=0.0) == pytest.approx(0.0, abs=1e-12)


def test_learning_rate_cosine_midpoint():
    # 1 warmup step, decay over steps 1..21: step 11 is halfway, so halfway between peak and floor.
    assert learning_rate(11, 22, 2.0, 1, floor=0.2) == pytest.approx(2.0 * 0.6, rel=1e-12)
    assert learning_rate(0, 5, 3.0, 0) == pytest.approx(3.0, rel=1e-12)


def test_step_indices_cover_every_example_once_per_epoch():
    n, per_step = 10, 4
    walk = [i for step in range(5) for i in step_indices(n, step, per_step, seed=7)]  # 20 positions: two epochs
    assert len(walk) == 20
    assert sorted(walk[:10]) == list(range(10)) and sorted(walk[10:]) == list(range(10))
    assert walk[:10] != walk[10:]  # a new shuffle each epoch
    assert walk[:10] != list(range(10))
    assert [step_indices(n, s, per_step, seed=7) for s in range(5)] == [walk[i:i + 4] for i in range(0, 20, 4)]
    assert [i for s in range(5) for i in step_indices(n, s, per_step, seed=8)] != walk
    wider = step_indices(3, 0, 6, seed=1)  # one step spans two epochs
    assert sorted(wider[:3]) == sorted(wider[3:]) == [0, 1, 2]
    with pytest.raises(TrainerError, match="empty"):
        step_indices(0, 0, 4, seed=7)


def test_run_training_logs_one_record_per_step_with_the_schedule():
    weights, tensors, batch_loss = lora_setup()
    settings = LoopSettings(steps=4, batch_size=2, grad_accum=2, lr=1e-2, warmup_steps=2, grad_clip=1.0,
                            weight_decay=0.0, seed=3, pad_id=PAD)
    records = []
    results = run_training(batch_loss, tensors, examples(6), settings, records.append)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and len(results) == 4
    assert [r["lr"] for r in records] == pytest.approx([5e-3, 1e-2, 1e-2, 1e-3], rel=1e-12)
    assert all(math.isfinite(r["loss"]) and r["answer_tokens"] == 4 * len(ANSWER) for r in records)


def test_validation_scores_go_into_the_records_and_learned_stops_the_loop():
    weights, tensors, batch_loss = lora_setup()
    settings = LoopSettings(steps=10, batch_size=2, grad_accum=1, lr=1e-2, warmup_steps=2, grad_clip=1.0,
                            weight_decay=0.0, seed=3, pad_id=PAD, stop_when_learned=True)
    validations = {2: {"val_identity_hit": 0.5, "learned": False}, 4: {"val_identity_hit": 1.0, "learned": True}}
    records = []
    results = run_training(batch_loss, tensors, examples(6), settings, records.append,
                           validate=lambda step: validations.get(step, {}))
    assert len(results) == 4 and [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[1]["val_identity_hit"] == 0.5 and records[3]["learned"] is True
    assert "val_identity_hit" not in records[0]
    keep_going = LoopSettings(**{**settings.__dict__, "stop_when_learned": False})
    assert len(run_training(batch_loss, tensors, examples(6), keep_going, validate=lambda step: validations.get(step, {}))) == 10
