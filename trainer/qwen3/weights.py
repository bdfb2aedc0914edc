"""Qwen3 weights on disk: safetensors in the Hugging Face layout, read one tensor at a time.

A checkpoint is `model.safetensors`, or shards listed by `model.safetensors.index.json`.
Every name and shape is checked against the config before any tensor is read, and
all problems are reported in one error. Pickle formats (.bin, .pt) are never opened.
"""

import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, IncompleteSnapshotError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError)
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from trainer.errors import TrainerError
from trainer.paths import weights_dir, write_atomic
from trainer.qwen3.heap import return_freed_memory
from trainer.progress import Progress, no_progress
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3.model import Weights

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# What a hub download fetches: weights, configs, tokenizer and chat template; no pickles.
HUB_PATTERNS = ["*.safetensors", "*.json", "tokenizer*", "*.txt", "*.jinja"]
# owner/name, as the Hub spells them: each part starts with a letter or digit, no ".." or "--" (so
# "../model" is a missing folder, not a repository).
HUB_ID = re.compile(r"(?!.*\.\.)(?!.*--)[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
MAX_NAMES_SHOWN = 20  # per list in a loading error, so a wrong model does not print 400 lines

Transform = Callable[[str, Tensor], object]


def layer_shapes(config: Qwen3Config, layer: int) -> dict[str, tuple[int, ...]]:
    """Checkpoint names and shapes of decoder layer `layer`; linear weights are [out, in]."""
    p = f"model.layers.{layer}."
    hidden, inner, dim = config.hidden_size, config.intermediate_size, config.head_dim
    q_width, kv_width = config.num_attention_heads * dim, config.num_key_value_heads * dim
    return {
        p + "input_layernorm.weight": (hidden,),
        p + "self_attn.q_proj.weight": (q_width, hidden),
        p + "self_attn.k_proj.weight": (kv_width, hidden),
        p + "self_attn.v_proj.weight": (kv_width, hidden),
        p + "self_attn.o_proj.weight": (hidden, q_width),
        p + "self_attn.q_norm.weight": (dim,),
        p + "self_attn.k_norm.weight": (dim,),
        p + "post_attention_layernorm.weight": (hidden,),
        p + "mlp.gate_proj.weight": (inner, hidden),
        p + "mlp.up_proj.weight": (inner, hidden),
        p + "mlp.down_proj.weight": (hidden, inner),
    }


def expected_shapes(config: Qwen3Config) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint for `config` must hold, in checkpoint order."""
    shapes = {"model.embed_tokens.weight": (config.vocab_size, config.hidden_size)}
    for layer in range(config.num_hidden_layers):
        shapes.update(layer_shapes(config, layer))
    shapes["model.norm.weight"] = (config.hidden_size,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, config.hidden_size)
    return shapes


def safetensors_files(model_dir: Path) -> list[Path]:
    """The files holding the weights: the shards an index names, else model.safetensors."""
    if not model_dir.is_dir():
        raise TrainerError(f"{model_dir}: not a directory")
    if (model_dir / INDEX_FILE).is_file():
        return shard_files(model_dir / INDEX_FILE)
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE]
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise TrainerError(f"{model_dir}: only {pickles} found; weights are loaded from safetensors only, because "
                           ".bin/.pt files are Python pickles that can execute code when opened")
    raise TrainerError(f"{model_dir}: no {SINGLE_FILE} or {INDEX_FILE} found")


def shard_files(index: Path) -> list[Path]:
    """The shard files named by a safetensors index, each checked to exist."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise TrainerError(f"{index}: not a safetensors index with a weight_map ({error!r})") from error
    missing = [name for name in names if not (index.parent / name).is_file()]
    if missing:
        raise TrainerError(f"{index}: names shard files that do not exist: {missing}")
    return [index.parent / name for name in names]


def header_shapes(files: list[Path]) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """name -> (file, shape) for every tensor, from the file headers only (no tensor data read)."""
    found = {}
    for path in files:
        try:
            with safe_open(path, framework="pt") as reader:
                for name in reader.keys():
                    found[name] = (path, tuple(reader.get_slice(name).get_shape()))
        except (SafetensorError, OSError) as error:
            raise TrainerError(f"{path}: not a readable safetensors file ({error})") from error
    return found


def listed(names: list[str]) -> str:
    """A bounded, comma-separated list of names for an error message."""
    extra = len(names) - MAX_NAMES_SHOWN
    return ", ".join(names[:MAX_NAMES_SHOWN]) + (f", ... and {extra} more" if extra > 0 else "")


def check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: Path) -> None:
    """Raise one error naming every missing, unexpected and mis-shaped tensor."""
    missing = [name for name in expected if name not in found]
    unexpected = sorted(name for name in found if name not in expected)
    misshaped = [f"{name} expected {expected[name]} found {found[name]}"
                 for name in expected if name in found and found[name] != expected[name]]
    problems = [f"{label} ({len(names)}): {listed(names)}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                if names]
    if problems:
        raise TrainerError(f"{source}: checkpoint does not match config.json; " + "; ".join(problems))


def checkpoint_files(model_dir: str | Path, config: Qwen3Config) -> dict[str, Path]:
    """name -> the safetensors file holding it, for every tensor `config` needs, in checkpoint order;
    every name and shape checked first (headers only, no tensor data read). A tied checkpoint that
    also carries lm_head.weight is accepted; that tensor is left out."""
    model_dir = Path(model_dir)
    found = header_shapes(safetensors_files(model_dir))
    if config.tie_word_embeddings:
        found.pop("lm_head.weight", None)
    expected = expected_shapes(config)
    check_shapes(expected, {name: shape for name, (_, shape) in found.items()}, model_dir)
    return {name: found[name][0] for name in expected}


def load_weights(model_dir: str | Path, config: Qwen3Config, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", transform: Transform | None = None,
                 progress: Progress = no_progress) -> Weights:
    """Read a checkpoint into {name: tensor}, one tensor at a time, checked against `config`.

    Each tensor is moved to `device` before it is converted (a bf16 copy crosses the bus,
    not an fp32 one), then passed through `transform(name, tensor)` if given, so a
    quantizer can replace it before the next one is read. progress(1) after each tensor.
    """
    weights = {}
    for name, path in checkpoint_files(model_dir, config).items():
        tensor = read_tensor(path, name, dtype, device)
        weights[name] = transform(name, tensor) if transform else tensor
        del tensor  # a transformed (quantized) tensor's dense copy is freed here, not one tensor later
        return_freed_memory()
        progress(1)
    return weights


def read_tensor(path: Path, name: str, dtype: torch.dtype | None, device: str | torch.device) -> Tensor:
    """One tensor from a safetensors file, in memory of its own on `device`, as `dtype` (None: as stored).

    safetensors maps the file into memory and hands out views of it. The file is opened
    for this one tensor, and a result that is still such a view is copied, so no mapping
    outlives the read: a shard kept open would keep every page read so far resident
    (gigabytes) while the next tensors are quantized.
    """
    with safe_open(path, framework="pt") as reader:
        stored = reader.get_tensor(name)
    tensor = stored.to(device).to(dtype or stored.dtype)  # moved first: a bf16 copy crosses the bus, not an fp32 one
    return tensor.clone() if tensor.data_ptr() == stored.data_ptr() else tensor


def plan_shards(weights: dict[str, Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Split names, in order, into groups of at most max_shard_bytes (a larger tensor gets its own)."""
    shards, size = [[]], 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards, size = shards + [[]], 0
        shards[-1].append(name)
        size += nbytes
    return shards


def replace_dir(final: Path, build: Callable[[Path], None]) -> None:
    """Build a folder under a temporary name beside `final`, then swap it in: never half a folder."""
    replace_dirs({final: build})


def replace_dirs(builds: dict[Path, Callable[[Path], None]]) -> None:
    """Build every folder under a temporary name first, then swap them all in, so that a failure
    while building any of them (a full disk, say) leaves every old folder as it was and no
    temporary folder behind: a pair such as adapter/ and merged/ never mixes two runs."""
    temps = {}
    try:
        for final, build in builds.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            temps[final] = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
            build(temps[final])
        for final, temp in temps.items():
            if final.exists():
                old = final.with_name(f".{final.name}-old-{time.time_ns()}")
                final.rename(old)
                remove_hidden(old)
            temp.rename(final)
    finally:
        for temp in temps.values():
            shutil.rmtree(temp, ignore_errors=True)


def remove_hidden(folder: Path) -> None:
    """Delete a folder already renamed out of sight (a dot name), finishing the job even when a
    second Ctrl-C (KeyboardInterrupt) lands midway, so that no half-deleted folder is left."""
    try:
        shutil.rmtree(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # disk full, file too large (a size limit), over quota


def is_out_of_space(error: OSError) -> bool:
    return error.errno in OUT_OF_SPACE


def space_message(what: Path, needed_bytes: int, error: OSError) -> str:
    """"no space to write X: it needs about N MB, M MB are free (the system said: ...)"."""
    free = shutil.disk_usage(next(p for p in (what, *what.parents) if p.exists())).free
    return (f"no space to write {what}: it needs about {needed_bytes / 1e6:.1f} MB, {free / 1e6:.1f} MB are free "
            f"({error.strerror or error})")


def save_safetensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, with its I/O failures (a full disk, a file-size limit) raised as the
    OSError they are, errno included, instead of a SafetensorError that hides them in its text."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as error:
        number = re.search(r"os error (\d+)", str(error))
        if number is None:
            raise
        raise OSError(int(number[1]), os.strerror(int(number[1])), str(path)) from error


def write_tensors(weights: dict[str, Tensor], path: Path) -> None:
    """Write one safetensors file atomically (contiguous CPU copies are made as needed)."""
    tensors = {name: tensor.contiguous() for name, tensor in weights.items()}

    def write(temp: Path) -> None:
        save_safetensors(tensors, temp, metadata={"format": "pt"})
        os.chmod(temp, default_file_mode())  # safetensors creates files only their owner can read

    write_atomic(path, write)


def default_file_mode() -> int:
    """The mode an ordinary new file gets: 0o666 less this process's umask (0o644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete weight files of an earlier save that the new layout does not use."""
    for path in [out_dir / SINGLE_FILE, out_dir / INDEX_FILE, *out_dir.glob("model-*-of-*.safetensors")]:
        if path.name not in keep and path.is_file():
            path.unlink()


def save_weights(weights: dict[str, Tensor], out_dir: str | Path, max_shard_bytes: int = 5 * 10**9) -> None:
    """Write weights as model.safetensors, or as shards plus an index when over max_shard_bytes."""
    packed = [name for name, value in weights.items() if not isinstance(value, Tensor)]
    if packed:
        raise TrainerError(f"cannot save packed (quantized) weights {listed(packed)}; dequantize them first")
    layout = {name: torch.empty(t.shape, dtype=t.dtype, device="meta") for name, t in weights.items()}
    write_weights(layout, weights.__getitem__, out_dir, max_shard_bytes)


def write_weights(layout: dict[str, Tensor], make: Callable[[str], Tensor], out_dir: str | Path,
                  max_shard_bytes: int, progress: Progress = no_progress) -> None:
    """Write the tensors `layout` describes (meta tensors: names, shapes, dtypes), each made by
    make(name) only when its file is written: a model built tensor by tensor (a merge) is held one
    shard at a time, never whole. model.safetensors, or shards plus an index past max_shard_bytes.

    Each file is written to a temporary name and renamed into place; the index last,
    so it only ever names complete shards. progress(1) after each tensor.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(layout, max_shard_bytes)
    files = [SINGLE_FILE] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file, names in zip(files, shards):
        shard = {}
        for name in names:
            shard[name] = make(name)
            progress(1)
        write_tensors(shard, out_dir / file)
        del shard
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in layout.values())},
                 "weight_map": {name: file for file, names in zip(files, shards) for name in names}}
        write_atomic(out_dir / INDEX_FILE, lambda temp: temp.write_text(json.dumps(index, indent=2), encoding="utf-8"))
    remove_stale(out_dir, {INDEX_FILE, *files} if len(shards) > 1 else {SINGLE_FILE})


def resolve_model_dir(name_or_dir: str | Path) -> Path:
    """A local model directory as is, or a hub id (`Qwen/Qwen3-4B-Instruct-2507`) downloaded into weights/."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    if not HUB_ID.fullmatch(str(name_or_dir)):
        raise TrainerError(f"{name_or_dir}: not a local directory nor a Hugging Face hub id like "
                           "Qwen/Qwen3-4B-Instruct-2507")
    return download(str(name_or_dir))


def download(repo_id: str) -> Path:
    """Fetch a hub repository's safetensors, configs and tokenizer into weights/<owner>--<name>.

    huggingface_hub shows a progress bar, resumes a transfer that broke off, and returns a
    complete earlier download when the hub cannot be reached. A file appears in the folder only
    once it is whole, so a failed download leaves a folder that `download` never returns and
    that loading would refuse (its files are listed and checked), and running again resumes it.
    """
    local_dir = weights_dir() / repo_id.replace("/", "--")
    try:
        snapshot_download(repo_id, local_dir=local_dir, allow_patterns=HUB_PATTERNS)
    except GatedRepoError as error:
        raise TrainerError(f"cannot download {repo_id}: the repository is gated ({status_of(error)}): accept its terms "
                           f"on https://huggingface.co/{repo_id}, then log in with `hf auth login` or set HF_TOKEN") from error
    except RepositoryNotFoundError as error:
        raise TrainerError(f"cannot download {repo_id}: no such repository on the Hub ({status_of(error)}), or it is "
                           "private: check the id, or log in with `hf auth login`") from error
    except LocalEntryNotFoundError as error:
        status = status_of(error.__cause__)
        if status is not None:
            raise TrainerError(f"cannot download {repo_id}: the Hub answered {status}; try again later, or pass a "
                               "local model directory") from error
        raise TrainerError(f"cannot download {repo_id}: the Hugging Face Hub is offline or unreachable, and there is no "
                           "complete earlier download; use --model tiny to run offline, or pass a local model "
                           "directory") from error
    except IncompleteSnapshotError as error:
        raise TrainerError(f"cannot download {repo_id}: the Hub is unreachable and the earlier download in {local_dir} "
                           "is incomplete; run again with the network to finish it") from error
    except HfHubHTTPError as error:
        raise TrainerError(f"cannot download {repo_id}: {str(error).splitlines()[0]}") from error
    except Exception as error:  # a transfer that broke off for good (connection reset, timeout, ...)
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}"
        raise TrainerError(f"cannot download {repo_id}: the transfer failed ({reason}); run the same command again "
                           f"to resume: the finished files in {local_dir} are kept") from error
    return local_dir


def status_of(error: BaseException | None) -> int | None:
    """The HTTP status of a huggingface_hub error, when it carries a response."""
    return getattr(getattr(error, "response", None), "status_code", None)
