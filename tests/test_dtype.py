"""--dtype auto and the FLOP count of a step: bf16 only where the hardware multiplies it natively,
and the useful work of a LoRA step counted by hand for a one-layer model."""

from dataclasses import replace

import pytest

from trainer.job.loading import auto_dtype, cpu_flags, resolve_dtype
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3.flops import lora_step_flops
from trainer.qwen3.lora import ALL_PROJECTIONS

SAPPHIRE_RAPIDS = frozenset("fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile".split())
ZEN4 = frozenset("fpu sse2 avx2 avx512f avx512_bf16".split())
ZEN2 = frozenset("fpu sse2 avx2 fma f16c".split())


@pytest.mark.parametrize(("device", "flags", "cuda_bf16", "dtype", "why"), [
    ("cpu", SAPPHIRE_RAPIDS, False, "bfloat16", "amx_bf16"),
    ("cpu", ZEN4, False, "bfloat16", "avx512_bf16"),
    ("cpu", ZEN2, False, "float32", "no native bf16"),
    ("cpu", frozenset(), False, "float32", "no native bf16"),  # no /proc/cpuinfo: macOS, Windows
    ("cuda", frozenset(), True, "bfloat16", "GPU supports bf16"),
    ("cuda", SAPPHIRE_RAPIDS, False, "float32", "GPU has no bf16"),  # e.g. a V100; the host CPU does not count
])
def test_auto_picks_bf16_only_where_it_is_native(device, flags, cuda_bf16, dtype, why):
    chosen, reason = auto_dtype(device, flags, cuda_bf16)
    assert chosen == dtype and why in reason


def test_cpu_flags_reads_the_flags_line_and_is_empty_without_the_file(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t\t: none\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_an_explicit_dtype_is_kept_as_asked():
    assert resolve_dtype("float32", "cpu") == ("float32", "as asked")
    assert resolve_dtype("bfloat16", "cpu") == ("bfloat16", "as asked")
    assert resolve_dtype("auto", "cpu") == auto_dtype("cpu", cpu_flags())


ONE_LAYER = Qwen3Config(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=4, rms_norm_eps=1e-6,
                        rope_theta=1e4, tie_word_embeddings=True, max_position_embeddings=16)


def test_the_flop_count_of_a_one_layer_step_matches_a_hand_count():
    """1 row of 3 tokens, 2 of them answer, LoRA r 2 on all seven projections, by hand:
    q 8->8, k 8->4, v 8->4, o 8->8, gate 8->16, up 8->16, down 16->8."""
    frozen = 4 * 3 * (8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 8 * 16 + 8 * 16 + 16 * 8)  # forward + input gradient
    lora = 6 * 3 * 2 * ((8 + 8) + (8 + 4) + (8 + 4) + (8 + 8) + (8 + 16) + (8 + 16) + (16 + 8))
    attention = 12 * (1 + 2 + 3) * 4 * 2  # causal pairs of 3 positions, head_dim 4, 2 heads
    head = 4 * 2 * 8 * 10  # 2 answer tokens x hidden 8 x vocabulary 10
    assert (frozen, lora, attention, head) == (6912, 4608, 576, 640)
    assert lora_step_flops(ONE_LAYER, 1, 3, 2, 2, ALL_PROJECTIONS) == frozen + lora + attention + head
    assert lora_step_flops(ONE_LAYER, 1, 3, 2, 2, ("q_proj",)) == frozen + 6 * 3 * 2 * 16 + attention + head
    two_layers = replace(ONE_LAYER, num_hidden_layers=2)
    assert lora_step_flops(two_layers, 1, 3, 2, 2, ALL_PROJECTIONS) == 2 * (frozen + lora + attention) + head
