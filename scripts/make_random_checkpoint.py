"""Write a random bf16 Qwen3 checkpoint of a real shape, in the Hugging Face sharded layout.

    python scripts/make_random_checkpoint.py --shape 4b /tmp/qwen3-4b-random

Benchmarks and loading tests need a checkpoint of the real size, not the real weights. The
model is never held whole: each shard's tensors are generated, written and dropped before
the next shard starts, so peak memory is about one shard (--max-shard-gb), not 8 GB.

Every tensor comes from its own generator, seeded by (--seed, tensor name), so the values do
not depend on how the tensors are grouped into shards, and `random_tensor` rebuilds any one
of them in memory (bench.py does) without reading the files. The numbers are drawn on
--device: a GPU draws the 4b shape's 4 billion in seconds where one CPU core takes minutes,
but its values differ from the CPU's, so both stacks of a benchmark must draw on the same one.
"""

import json
from pathlib import Path

import click
import torch
from torch import Tensor

from trainer.cli import user_errors_as_messages
from trainer.job.loading import resolve_device
from trainer.job.stages import peak_rss_bytes
from trainer.paths import write_atomic
from trainer.qwen3.config import QWEN3_0_6B, QWEN3_4B_INSTRUCT_2507, TINY, Qwen3Config, config_to_json
from trainer.qwen3.model import stable_seed
from trainer.qwen3.weights import INDEX_FILE, expected_shapes, plan_shards, write_tensors

SHAPES = {"tiny": TINY, "0.6b": QWEN3_0_6B, "4b": QWEN3_4B_INSTRUCT_2507}
STD = 0.02  # standard deviation of every matrix; norm weights are ones
DTYPE = torch.bfloat16  # what the released Qwen3 checkpoints store


def random_tensor(name: str, shape: tuple[int, ...], seed: int, device: str = "cpu") -> Tensor:
    """The bf16 value of tensor `name` on `device`: ones for RMSNorm weights, Normal(0, STD) otherwise."""
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=DTYPE, device=device)
    generator = torch.Generator(device).manual_seed(stable_seed(seed, name))
    return torch.randn(shape, generator=generator, dtype=DTYPE, device=device).mul_(STD)


def shard_plan(config: Qwen3Config, max_shard_bytes: int) -> list[list[str]]:
    """Tensor names grouped into shards, in checkpoint order, planned on shapes alone (meta tensors)."""
    meta = {name: torch.empty(shape, dtype=DTYPE, device="meta") for name, shape in expected_shapes(config).items()}
    return plan_shards(meta, max_shard_bytes)


def shard_name(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def write_shards(config: Qwen3Config, out_dir: Path, seed: int, max_shard_bytes: int, device: str) -> dict[str, str]:
    """Generate and write one shard at a time; returns the index's weight_map (name -> file)."""
    shapes = expected_shapes(config)
    shards = shard_plan(config, max_shard_bytes)
    weight_map = {}
    for i, names in enumerate(shards):
        file = shard_name(i, len(shards))
        write_tensors({name: random_tensor(name, shapes[name], seed, device).cpu() for name in names}, out_dir / file)
        weight_map.update({name: file for name in names})
    return weight_map


def total_bytes(config: Qwen3Config) -> int:
    size = torch.empty((), dtype=DTYPE).element_size()
    return sum(torch.Size(shape).numel() * size for shape in expected_shapes(config).values())


def write_json(path: Path, content: dict) -> None:
    text = json.dumps(content, indent=2)
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def make_random_checkpoint(config: Qwen3Config, out_dir: Path, seed: int = 0, max_shard_bytes: int = 2 * 10**9,
                           device: str = "cpu") -> None:
    """config.json, then the shards, then the index: a reader that finds the index finds every shard."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", config_to_json(config, "bfloat16"))
    weight_map = write_shards(config, out_dir, seed, max_shard_bytes, device)
    write_json(out_dir / INDEX_FILE, {"metadata": {"total_size": total_bytes(config)}, "weight_map": weight_map})


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--shape", type=click.Choice(sorted(SHAPES)), required=True,
              help="Which Qwen3 preset to copy: tiny (tests), 0.6b, or 4b (Qwen3-4B-Instruct-2507).")
@click.option("--seed", default=0, show_default=True, help="Base seed; each tensor's seed also mixes in its name.")
@click.option("--max-shard-gb", default=2.0, show_default=True,
              help="Largest shard in GB (10^9 bytes); a single bigger tensor gets a shard of its own.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              help="Where the random numbers are drawn (cuda: seconds for 4b; other values than cpu's).")
@user_errors_as_messages
def main(out_dir: Path, shape: str, seed: int, max_shard_gb: float, device: str) -> None:
    config = SHAPES[shape]
    make_random_checkpoint(config, out_dir, seed, int(max_shard_gb * 10**9), resolve_device(device))
    click.echo(f"wrote {total_bytes(config) / 1e9:.2f} GB of random {shape} weights to {out_dir} "
               f"(peak RSS {peak_rss_bytes() / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
