"""NF4 4-bit frozen weights through bitsandbytes: the "Q" in QLoRA.

Each linear weight [out, in] is cut into blocks of 64 values; every block stores 4-bit
indices into the 16 NF4 levels (normal-distribution quantiles) plus one scale (absmax).
Double quantization stores those scales in 8 bits too. A 4-bit weight costs about
0.53 bytes per value instead of 2 (bf16). Embeddings, norms and an untied lm_head stay in
the compute dtype: they are small next to the linears, or read by row, not multiplied.
"""

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

BLOCK_SIZE = 64
QUANTIZED_SUFFIXES = ("_proj.weight",)  # q/k/v/o and gate/up/down projections


def _bitsandbytes():
    """Import bitsandbytes quietly: on CPU it logs about optional kernels it does not need."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes
        import bitsandbytes.functional
    return bitsandbytes


@dataclass(frozen=True)
class NF4Weight:
    """A frozen linear weight [out, in] stored as NF4; multiplies itself in `linear`."""

    packed: Tensor  # uint8 [out * in / 2, 1]: two 4-bit codes per byte
    state: object  # bitsandbytes QuantState: block scales, NF4 code book, shape, dtype

    @property
    def shape(self) -> torch.Size:
        return self.state.shape

    @property
    def nbytes(self) -> int:
        """Bytes held: the codes plus the (double-quantized) block scales."""
        scales = self.state.absmax.numel() * self.state.absmax.element_size()
        nested = self.state.state2.absmax.numel() * 4 if self.state.nested else 0
        return self.packed.numel() + scales + nested

    def linear(self, x: Tensor) -> Tensor:
        """x [.., in] -> x @ W.T [.., out]; gradients flow to x, never to the frozen codes."""
        import bitsandbytes  # already imported, quietly, by quantize_nf4; no logging here for --compile to trace

        return bitsandbytes.matmul_4bit(x, self.packed.t(), quant_state=self.state)

    def dequantize(self) -> Tensor:
        """The dense weight [out, in] that the 4-bit codes stand for."""
        return _bitsandbytes().functional.dequantize_4bit(self.packed, self.state)


def quantize_nf4(weight: Tensor) -> NF4Weight:
    """weight [out, in] (compute dtype, on its device) -> NF4 with double quantization."""
    packed, state = _bitsandbytes().functional.quantize_4bit(
        weight.contiguous(), blocksize=BLOCK_SIZE, quant_type="nf4", compress_statistics=True
    )
    return NF4Weight(packed, state)


def is_quantized_name(name: str) -> bool:
    """Only the decoder's linear projections become 4-bit."""
    return name.endswith(QUANTIZED_SUFFIXES)


def nf4_transform(name: str, tensor: Tensor) -> Tensor | NF4Weight:
    """The load hook: quantize each projection as it is read, so its dense copy is freed at once."""
    return quantize_nf4(tensor) if is_quantized_name(name) else tensor


def quant_transform(quant: str) -> Callable[[str, Tensor], Tensor | NF4Weight] | None:
    """`--quant nf4` -> the NF4 load hook; `--quant none` -> keep dense weights."""
    return {"nf4": nf4_transform, "none": None}[quant]
