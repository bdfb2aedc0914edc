"""Export a Qwen3 model folder (for example the job's OUT/merged) to one GGUF file.

    python scripts/export_gguf.py weights/whoami-tiny/merged --type q8_0

Writes MODEL_DIR/../gguf/<name>-<type>.gguf unless --out says otherwise, and an Ollama
Modelfile beside it. Needs the optional gguf package: pip install -e ".[gguf]".
"""

import time
from pathlib import Path

import click

from ..cli import user_errors_as_messages
from ..job.gguf_export import GGUF_TYPES, default_gguf_path, require_gguf, write_gguf, write_modelfile
from ..job.template_check import folder_family


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--type", "gguf_type", type=click.Choice(GGUF_TYPES), default="q8_0", show_default=True,
              help="How the matrices are stored: f32, f16, bf16, or q8_0 (8-bit blocks, about half of f16).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The .gguf file to write [default: MODEL_DIR/../gguf/<name>-<type>.gguf].")
@user_errors_as_messages
def main(model_dir: Path, gguf_type: str, out: Path | None) -> None:
    require_gguf()
    if out is not None and out.suffix != ".gguf":
        raise click.BadParameter(f"{out}: expected a file name ending in .gguf", param_hint="'--out'")
    target = out or default_gguf_path(model_dir, gguf_type)
    started = time.perf_counter()
    written = write_gguf(model_dir, target, gguf_type)
    modelfile = write_modelfile(written, folder_family(model_dir))
    click.echo(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s) "
               f"and {modelfile}")


if __name__ == "__main__":
    main()
