"""Name or folder -> a ready model: config, tokenizer and weights, in one call.

"tiny" is the offline tiny world (built on first use); a local folder is read as is; a hub id
such as Qwen/Qwen3-4B-Instruct-2507 is downloaded into weights/ first. `--dtype auto` and
`--device auto` are settled here too, the same way for every command.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import TrainerError
from ..progress import Progress, no_progress
from ..qwen3.config import TINY, Qwen3Config, load_config
from ..qwen3.lora import load_adapter, lora_shapes, make_adapter
from ..qwen3.model import LoraAdapter, Weights
from ..qwen3.quant import quant_transform
from ..qwen3.weights import load_weights, resolve_model_dir
from ..text.chat import ChatFormat
from ..text.chat_templates import INSTRUCT_2507
from ..text.tokenizer import Tokenizer, load_tokenizer
from ..training.checkpoint import check_tensors
from .template_check import folder_family, served_format
from .tiny import TINY_WORLDS, ensure_tiny_model, tiny_model_dir, tiny_model_ready, world_settings


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that multiply bf16 in hardware


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where the file does not exist, as on macOS or Windows)."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return frozenset()
    return next((frozenset(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), frozenset())


def auto_dtype(device: str, flags: frozenset[str], cuda_bf16: bool = True) -> tuple[str, str]:
    """(dtype, why) for --dtype auto: bfloat16 where the hardware multiplies it natively (a GPU
    with bf16, a CPU with AMX or AVX512-BF16: about twice the fp32 matmul speed, or more), float32
    elsewhere, where bf16 would be emulated and slower than fp32."""
    if device == "cuda":
        return ("bfloat16", "the GPU supports bf16") if cuda_bf16 else ("float32", "the GPU has no bf16")
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native:
        return "bfloat16", f"this CPU multiplies bf16 natively ({native[0]})"
    return "float32", "this CPU has no native bf16 matmul (no AMX or AVX512-BF16)"


def resolve_device(requested: str) -> str:
    """"auto" -> cuda when torch sees a GPU, else cpu; "cpu" and "cuda" (or "cuda:N") as they are,
    but cuda only when torch can use it: said in one line before any work, not as an assertion later."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        build = "this torch is a CPU build" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise TrainerError(f"--device {requested}: {build}; use --device cpu (or auto)")
    return requested


def resolve_dtype(requested: str, device: str) -> tuple[str, str]:
    """(dtype, why): "auto" settled for this machine by `auto_dtype`, otherwise as asked."""
    if requested != "auto":
        return requested, "as asked"
    cuda_bf16 = device == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return auto_dtype(device, cpu_flags() if device == "cpu" else frozenset(), cuda_bf16)


def dtype_line(dtype: str, why: str) -> str:
    """The one line every command prints about its compute dtype."""
    return f"compute dtype {dtype}: {why}"


@dataclass(frozen=True)
class LoadedModel:
    folder: Path
    config: Qwen3Config
    tokenizer: Tokenizer
    weights: Weights
    chat: ChatFormat = ChatFormat()  # how it is prompted: its template's family (hybrid: thinking off)


def resolve_model(name_or_dir: str) -> Path:
    """"tiny" -> weights/tiny-qwen3, "tiny-hybrid" and "tiny-thinking" -> the world in those layouts
    (each pre-trained on first use); otherwise a folder or a hub id."""
    if name_or_dir not in TINY_WORLDS:
        return resolve_model_dir(name_or_dir)
    family = TINY_WORLDS[name_or_dir]
    return tiny_model_dir(family) if tiny_model_ready(family) else build_tiny_model_visibly(family)


def build_tiny_model_visibly(family: str = INSTRUCT_2507) -> Path:
    """The first use of "tiny": say what is happening, show a progress bar (steps, loss) on a
    terminal, and end with one line saying how long it took and where the world is cached. All
    on stderr, so a command's own output stays clean. Another layout is post-trained from the 2507
    world, which is built first where it is missing."""
    if family != INSTRUCT_2507 and not tiny_model_ready(INSTRUCT_2507):
        build_tiny_model_visibly(INSTRUCT_2507)
    steps = world_settings(family).steps
    how = "pre-training" if family == INSTRUCT_2507 else f"post-training the 2507 world into the {family} layout,"
    print(f"building the tiny world (first use only): {how} a {TINY.num_hidden_layers}-layer Qwen3 "
          f"for {steps} steps", file=sys.stderr)
    started = time.perf_counter()
    with tqdm(total=steps, desc="tiny world", unit="step", disable=None, file=sys.stderr, dynamic_ncols=True) as bar:

        def show(record: dict) -> None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
            bar.update(1)

        folder = ensure_tiny_model(show, family)
    print(f"tiny world built in {time.perf_counter() - started:.0f} s, cached in {folder}", file=sys.stderr)
    return folder


def load_model(name_or_dir: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu",
               quant: str = "none", progress: Progress = no_progress) -> LoadedModel:
    """Config, tokenizer and weights (linears 4-bit when quant="nf4") of a model folder or name."""
    folder = resolve_model(str(name_or_dir))
    config = load_config(folder)
    weights = load_weights(folder, config, dtype, device, transform=quant_transform(quant), progress=progress)
    return LoadedModel(folder, config, load_tokenizer(folder), weights, served_format(folder_family(folder)))


def load_inference_adapter(adapter_dir: str | Path, config: Qwen3Config, dtype: torch.dtype, device: str) -> LoraAdapter:
    """A saved PEFT adapter, checked against the model's shapes, ready for generation (no dropout)."""
    tensors, settings = load_adapter(adapter_dir)
    check_tensors(Path(adapter_dir), tensors, lora_shapes(config, settings), what="adapter")
    return make_adapter({name: t.to(device) for name, t in tensors.items()}, settings, training=False, dtype=dtype)
