"""What training keeps for backward, and how it keeps less: the forward pass stays plain.

Autograd keeps, for backward, the tensors each operation needs for its gradient. Some of those
are cheap to make again from tensors it keeps anyway: the normed layer input that every
projection's LoRA A needs (made from the norm's input), SwiGLU's [B, T, I] output that down_proj's
LoRA A needs (from gate and up), the per-head-normed, rotated q and k that attention keeps (from q
and k before their norm), a dropped-out copy per projection (from the row seeds). One 0.6b fp32
forward kept 2.60 GB of activations with plain autograd and 1.67 GB this way.

    forward, while `rebuilt_in_backward()` is on:
        y = f(x)                 f is marked @rebuildable: y is noted as "f(x)"
        op(y) saves y            autograd's pack hook keeps "f(x)" (x is kept anyway), not y
    backward:
        unpack "f(x)"            y = f(x) again: the same operations, so the same values

`rebuilt_in_backward()` is the one switch; `trainer.qwen3.model.forward` turns it on while it
trains without activation checkpointing (a checkpointed layer keeps only its input already).
Besides the notes, two operations have a hand-written backward that keeps less: RMSNorm for
inputs narrower than float32 and SwiGLU.
"""

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Recipe:
    """How to make a tensor again: make(*arguments, **options); an argument may itself be a Recipe."""

    make: Callable[..., Tensor]
    arguments: tuple
    options: dict

    def __call__(self) -> Tensor:
        return self.make(*(a() if isinstance(a, Recipe) else a for a in self.arguments), **self.options)


@dataclass(frozen=True)
class Note:
    """A tensor made by a @rebuildable operation, known by its storage while it lives."""

    recipe: Recipe
    version: int  # the tensor's version counter when noted: changed in place since, it is kept as it is
    offset: int  # its storage offset
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class Kept:
    """A saved tensor kept as a recipe, and where it sits in the noted tensor's storage."""

    recipe: Recipe
    made_stride: tuple[int, ...]  # the noted tensor's layout, which the recipe makes again
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # storage offset from the noted tensor's, in elements


Notes = dict[int, Note]  # storage address -> note
_notes: ContextVar[Notes | None] = ContextVar("rebuildable_notes", default=None)


def address(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def rebuildable(make: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Mark an operation whose output backward may make again from its arguments instead of keeping it.

    Only a new tensor of its own is noted, never a view of an argument: made again from the same
    arguments, it comes out with the same values and the same layout.
    """

    @wraps(make)
    def noted(*arguments, **options):
        out = make(*arguments, **options)
        if torch.compiler.is_compiling():
            return out  # a compiled step's backward keeps what the compiler chooses
        notes = _notes.get()
        inputs = {address(a) for a in arguments if isinstance(a, Tensor)}
        if notes is not None and out.numel() and address(out) not in inputs:
            recipe = Recipe(make, tuple(recipe_of(notes, a) for a in arguments), options)
            notes[address(out)] = Note(recipe, out._version, out.storage_offset(), tuple(out.shape), out.stride())
            # forget it with the tensor: a storage freed and reused by another tensor must not match
            weakref.finalize(out, notes.pop, address(out), None)
        return out

    return noted


def recipe_of(notes: Notes, argument: object) -> object:
    """A noted tensor's own recipe, so that a recipe holds no tensor that autograd does not keep
    anyway; else the argument, detached (a kept tensor that points back into the graph is a cycle)."""
    if not isinstance(argument, Tensor):
        return argument
    found = notes.get(address(argument)) if argument.numel() else None
    if found and (found.version, found.offset, found.size, found.stride) == (
            argument._version, argument.storage_offset(), tuple(argument.shape), argument.stride()):
        return found.recipe
    return argument.detach()


def keep(notes: Notes, saved: Tensor) -> Tensor | Kept:
    """autograd's pack hook: a recipe for a noted tensor (or a view of it), else the tensor itself."""
    found = notes.get(address(saved)) if saved.layout == torch.strided and saved.numel() else None
    if found is None or found.version != saved._version:
        return saved
    return Kept(found.recipe, found.stride, tuple(saved.shape), saved.stride(), saved.storage_offset() - found.offset)


def make_again(kept: Tensor | Kept) -> Tensor:
    """autograd's unpack hook: a kept recipe's tensor made again, viewed as it was saved."""
    if not isinstance(kept, Kept):
        return kept
    with torch.no_grad():
        made = kept.recipe()
    if made.stride() != kept.made_stride:
        raise RuntimeError(f"a tensor made again for backward came out with strides {made.stride()}, "
                           f"not {kept.made_stride}")
    return made.as_strided(kept.size, kept.stride, kept.offset)


@contextmanager
def rebuilt_in_backward() -> Iterator[None]:
    """The switch: while on, autograd keeps a @rebuildable operation's output as its recipe."""
    notes: Notes = {}
    token = _notes.set(notes)
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda saved: keep(notes, saved), make_again):
            yield
    finally:
        _notes.reset(token)


class RMSNorm(torch.autograd.Function):
    """weight * x / rms(x) over the last dim, the mean square in float32, for x narrower than
    float32; x [.., H] -> [.., H], weight [H].

    Plain autograd would keep a float32 copy of x for backward (twice the bytes of bf16 x, and
    four of these norms run per layer); this keeps x as it came and 1/rms [.., 1]. Backward, with
    n = x / rms and g = d loss / d n:   d loss / dx = (g - n * mean(g * n)) / rms.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # [.., 1] float32
        ctx.save_for_backward(x, weight, inv_rms)
        return weight * (x32 * inv_rms).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        x, weight, inv_rms = ctx.saved_tensors
        normed = x.float() * inv_rms  # [.., H] float32
        grad_weight = (grad * normed.to(x.dtype)).sum_to_size(weight.shape) if ctx.needs_input_grad[1] else None
        grad_normed = (grad * weight).float()  # [.., H]
        grad_x = inv_rms * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
        return grad_x.to(x.dtype), grad_weight, None


class SwiGLU(torch.autograd.Function):
    """silu(gate) * up for gate, up [B, T, I], keeping only gate and up for backward.

    Plain autograd would also keep silu(gate): a third [B, T, I] tensor per layer, the
    widest activations of the model. Backward recomputes it from gate instead, in place where it
    can (the moment of the whole step that holds the most memory when layers are recomputed).
    """

    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor) -> Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate).mul_(up)  # in place: one [B, T, I] buffer, not silu's and the product's

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        gate, up = ctx.saved_tensors
        sigmoid = torch.sigmoid(gate)
        silu = gate * sigmoid
        # d silu(g) / dg = sigmoid(g) + g sigmoid(g) (1 - sigmoid(g)) = sigmoid + silu (1 - sigmoid),
        # made in place, operation for operation as the plain formula rounds (the tiny world is
        # built with it), so at most three [B, T, I] temporaries exist at once
        slope = torch.sub(1, sigmoid).mul_(silu).add_(sigmoid)
        del sigmoid
        return (grad * up).mul_(slope), silu.mul_(grad)
