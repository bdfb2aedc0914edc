"""What training keeps for backward: recipes instead of tensors, and the hand-written backward passes."""

import torch

from trainer.qwen3 import memory
from trainer.qwen3.memory import Recipe, RMSNorm, SwiGLU, rebuildable, rebuilt_in_backward
from trainer.qwen3.model import LoraAdapter, linear, lora_names, rms_norm

exp, sin = rebuildable(torch.exp), rebuildable(torch.sin)


def test_a_noted_output_is_kept_as_its_recipe_and_made_again_for_backward():
    x = torch.randn(5, requires_grad=True)
    with rebuilt_in_backward():
        y = exp(x)
        z = y.cos()  # cos keeps its input for backward
    kept = z.grad_fn._saved_self  # unpacked: made again
    assert kept.data_ptr() != y.data_ptr() and torch.equal(kept, y)
    assert torch.equal(torch.autograd.grad(z.sum(), x)[0], torch.autograd.grad(x.exp().cos().sum(), x)[0])


def test_without_the_switch_nothing_is_noted_and_the_tensor_itself_is_kept():
    x = torch.randn(5, requires_grad=True)
    y = exp(x)
    assert y.cos().grad_fn._saved_self.data_ptr() == y.data_ptr()


def test_a_recipe_of_noted_outputs_holds_their_recipes_not_the_tensors():
    """sin(exp(x)): the recipe of the outer output starts from x, so exp(x) can be freed."""
    x = torch.randn(5, requires_grad=True)
    with rebuilt_in_backward():
        y = exp(x)
        z = sin(y)
        note = memory._notes.get()[memory.address(z)]
    assert note.recipe.make is torch.sin and isinstance(note.recipe.arguments[0], Recipe)
    assert note.recipe.arguments[0].arguments[0].data_ptr() == x.data_ptr()
    assert torch.equal(note.recipe(), z)


def test_a_view_of_a_noted_output_is_made_again_as_that_view():
    x = torch.randn(4, 6, requires_grad=True)
    with rebuilt_in_backward():
        y = exp(x)
        z = y.t()[1:3].cos()  # a transposed, offset view
    kept = z.grad_fn._saved_self
    assert kept.shape == (2, 4) and torch.equal(kept, y.t()[1:3])
    assert torch.equal(torch.autograd.grad(z.sum(), x)[0], torch.autograd.grad(x.exp().t()[1:3].cos().sum(), x)[0])


def test_an_output_changed_in_place_or_freed_is_not_rebuilt():
    x = torch.randn(5, requires_grad=True)
    with rebuilt_in_backward():
        y = exp(x).mul_(2)  # changed after it was noted: a recipe would make the old values
        z = y.cos()
        notes = memory._notes.get()
        w = exp(x.detach())
        where = memory.address(w)
        del w
        assert where not in notes  # freed: its address may be another tensor's now
    assert z.grad_fn._saved_self.data_ptr() == y.data_ptr()


def test_lora_dropout_made_again_in_backward_gives_the_same_gradients():
    """Dropout is made again from the row seeds: the same mask, so the same gradients."""
    name = "model.layers.0.mlp.down_proj.weight"
    a_name, b_name = lora_names(name)
    w, source = torch.randn(6, 8), torch.randn(2, 5, 8, requires_grad=True)
    a, b = torch.randn(4, 8, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    lora = LoraAdapter({a_name: a, b_name: b}, scale=0.5, dropout=0.3, training=True, row_seeds=torch.tensor([7, 8]))
    grad = torch.randn(2, 5, 6)

    def gradients(lora: LoraAdapter) -> tuple[torch.Tensor, ...]:
        x = rms_norm(source, torch.ones(8), 1e-6)
        return torch.autograd.grad(linear(x, {name: w}, name, lora), (source, a, b), grad)

    with rebuilt_in_backward():
        rebuilt = gradients(lora)
    kept = gradients(lora)
    assert all(torch.equal(r, k) for r, k in zip(rebuilt, kept))
    no_dropout = gradients(LoraAdapter(lora.tensors, 0.5, 0.0, True))
    assert (rebuilt[1] - no_dropout[1]).abs().max() > 1e-3  # dropout acted
def plain_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The same formula through plain autograd (transformers' Qwen3RMSNorm computes it so)."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def test_rms_norm_gradients_equal_plain_autograd():
    """RMSNorm's hand-written backward in float32 (it computes in float32 whatever comes in, so
    a float64 gradcheck does not apply)."""
    x = (3 * torch.randn(2, 3, 8)).requires_grad_()
    weight = (1 + 0.3 * torch.randn(8)).requires_grad_()
    grad = torch.randn(2, 3, 8)
    ours = torch.autograd.grad(RMSNorm.apply(x, weight, 1e-6), (x, weight), grad)
    plain = torch.autograd.grad(plain_rms_norm(x, weight, 1e-6), (x, weight), grad)
    assert all(torch.allclose(o, p, rtol=1e-5, atol=1e-6) for o, p in zip(ours, plain))
    assert ours[0].abs().max() > 0.1 and ours[1].abs().max() > 0.1


def test_rms_norm_per_head_weight_and_bf16_backward():
    """q_norm: one weight [D] for every head of [B, heads, T, D]; bf16 grads within bf16 rounding of plain autograd."""
    x = torch.randn(2, 4, 5, 16).bfloat16().requires_grad_()
    weight = (1 + 0.3 * torch.randn(16)).bfloat16().requires_grad_()
    grad = torch.randn(2, 4, 5, 16).bfloat16()
    assert torch.equal(RMSNorm.apply(x, weight, 1e-6), plain_rms_norm(x, weight, 1e-6))
    ours = torch.autograd.grad(RMSNorm.apply(x, weight, 1e-6), (x, weight), grad)
    plain = torch.autograd.grad(plain_rms_norm(x, weight, 1e-6), (x, weight), grad)
    for o, p in zip(ours, plain):
        assert o.dtype == torch.bfloat16 and o.shape == p.shape
        assert (o.float() - p.float()).abs().max() <= 0.02 * p.float().abs().max()


def test_rms_norm_keeps_no_float32_copy_for_backward():
    x = torch.randn(3, 8).bfloat16().requires_grad_()
    out = rms_norm(x, torch.ones(8, dtype=torch.bfloat16), 1e-6)
    saved = out.grad_fn.saved_tensors
    assert [t.dtype for t in saved] == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert saved[2].shape == (3, 1)  # 1/rms only, not [3, 8]


def test_swiglu_gradients_equal_plain_autograd():
    gate, up = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True), torch.randn(2, 5, 7, dtype=torch.float64,
                                                                                          requires_grad=True)
    assert torch.autograd.gradcheck(SwiGLU.apply, (gate, up))
    grad = torch.randn(2, 5, 7, dtype=torch.float64)
    ours = torch.autograd.grad(SwiGLU.apply(gate, up), (gate, up), grad)
    plain = torch.autograd.grad(torch.nn.functional.silu(gate) * up, (gate, up), grad)
    assert all(torch.allclose(o, p, atol=1e-12) for o, p in zip(ours, plain))


def test_swiglu_keeps_two_tensors_for_backward():
    gate, up = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    assert len(SwiGLU.apply(gate, up).grad_fn.saved_tensors) == 2

