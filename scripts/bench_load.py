"""How fast a checkpoint folder loads, and how much memory loading takes beside what it keeps.

    python scripts/make_random_checkpoint.py --shape 4b /tmp/qwen3-4b-random
    python scripts/bench_load.py /tmp/qwen3-4b-random --quant nf4 --dtype bfloat16

It loads through trainer.qwen3.weights.load_weights, as the trainer does (nf4: each projection is
quantized before the next tensor is read), and reports the seconds, the bytes the loaded model
holds (4-bit and dense apart), and the peak RSS against them and against the files' size.
"""

import json
import time
from pathlib import Path

import click
import torch
from torch import Tensor

from measure import DTYPES, require_device, synchronize
from trainer.cli import DTYPE_CHOICES, DTYPE_HELP, user_errors_as_messages
from trainer.job.stages import peak_rss_bytes
from trainer.job.loading import dtype_line, resolve_dtype
from trainer.qwen3.config import load_config
from trainer.qwen3.model import Weights
from trainer.qwen3.quant import NF4Weight, quant_transform
from trainer.qwen3.weights import load_weights, safetensors_files


def held_bytes(weights: Weights) -> tuple[int, int]:
    """(bytes in NF4 weights, bytes in dense tensors)."""
    packed = sum(w.nbytes for w in weights.values() if isinstance(w, NF4Weight))
    dense = sum(w.numel() * w.element_size() for w in weights.values() if isinstance(w, Tensor))
    return packed, dense


def measure_load(model_dir: Path, dtype: str, device: str, quant: str) -> dict:
    """Load the folder once and report time and memory (the process's peak RSS, and CUDA's on a GPU)."""
    config = load_config(model_dir)
    file_bytes = sum(path.stat().st_size for path in safetensors_files(model_dir))
    before = peak_rss_bytes()
    started = time.perf_counter()
    weights = load_weights(model_dir, config, DTYPES[dtype], device, quant_transform(quant))
    synchronize(device)
    seconds = time.perf_counter() - started
    packed, dense = held_bytes(weights)
    return {"dir": str(model_dir), "dtype": dtype, "device": device, "quant": quant, "seconds": seconds,
            "file_bytes": file_bytes, "packed_bytes": packed, "dense_bytes": dense, "loaded_bytes": packed + dense,
            "rss_before_bytes": before, "peak_rss_bytes": peak_rss_bytes(),
            "cuda_peak_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None}


def load_report(r: dict) -> str:
    gb = 1e9
    lines = [f"loaded {r['dir']} ({r['file_bytes'] / gb:.2f} GB of safetensors) with --quant {r['quant']} "
             f"--dtype {r['dtype']} on {r['device']} in {r['seconds']:.1f} s "
             f"({r['file_bytes'] / gb / r['seconds']:.2f} GB/s of file)",
             f"  loaded model bytes: {r['loaded_bytes'] / gb:.3f} GB "
             f"(NF4 {r['packed_bytes'] / gb:.3f} GB + dense {r['dense_bytes'] / gb:.3f} GB)",
             f"  peak RSS:           {r['peak_rss_bytes'] / gb:.3f} GB = "
             f"{r['peak_rss_bytes'] / r['loaded_bytes']:.2f}x loaded bytes, "
             f"{r['peak_rss_bytes'] / r['file_bytes']:.2f}x file size "
             f"({r['rss_before_bytes'] / gb:.3f} GB before loading)"]
    if r["cuda_peak_bytes"] is not None:
        lines.append(f"  CUDA peak:          {r['cuda_peak_bytes'] / gb:.3f} GB")
    return "\n".join(lines)


@click.command(context_settings={"show_default": True})
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="Where the weights go.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto", help=DTYPE_HELP)
@click.option("--quant", type=click.Choice(["none", "nf4"]), default="none",
              help="nf4: 4-bit frozen projections, quantized one tensor at a time while loading.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of the report.")
@user_errors_as_messages
def main(model_dir: Path, device: str, dtype: str, quant: str, as_json: bool) -> None:
    require_device(device)
    dtype, why = resolve_dtype(dtype, device)
    if not as_json:
        click.echo(dtype_line(dtype, why), err=True)
    result = measure_load(model_dir, dtype, device, quant)
    click.echo(json.dumps(result) if as_json else load_report(result))


if __name__ == "__main__":
    main()
