"""GGUF export: a Hugging Face model folder as the one file llama.cpp, Ollama and LM Studio read.

Written through llama.cpp's own writer, the `gguf` package (an optional extra:
`pip install -e ".[gguf]"`). The file holds
- the Qwen3 hyper-parameters under llama.cpp's "qwen3" keys (sizes, heads, RoPE base, RMSNorm eps);
- every tensor under llama.cpp's name for it, from the package's own name map
  (model.layers.0.self_attn.q_proj.weight -> blk.0.attn_q.weight; an untied lm_head -> output.weight);
- the tokenizer: the byte-level BPE tokens and merges of tokenizer.json, one type per token
  (control for special tokens, user-defined for the other added ones, unused for the rows past
  the tokenizer that only pad the embedding), the Qwen2 pre-tokenizer, end and padding ids;
- the model's own chat template, so a runner renders prompts the way training did.

Tensors are read, converted and written one at a time: memory holds one tensor, never the model.
Types: f32, f16 and bf16 store every matrix in that type; q8_0 stores them in blocks of 32 int8
values with one f16 scale each (about 8.5 bits a weight). Norm weights stay f32 in every type.
"""

import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from safetensors import safe_open

from ..errors import TrainerError
from ..paths import write_atomic
from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config, load_config
from ..qwen3.weights import expected_shapes, header_shapes, is_out_of_space, safetensors_files, space_message
from ..text.chat import generation_prompt
from ..text.chat_templates import INSTRUCT_2507
from .template_check import read_chat_template

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
Q8_ROWS_PER_CHUNK = 4096  # rows quantized at once: bounds the float32 copy of a 4B embedding to ~40 MB


def require_gguf() -> ModuleType:
    """The `gguf` package, or a one-line error saying how to install it."""
    try:
        import gguf
    except ImportError as error:
        raise TrainerError('GGUF export needs the gguf package: pip install -e ".[gguf]" '
                           '(or pip install gguf)') from error
    return gguf


def gguf_file_name(name: str, gguf_type: str) -> str:
    """<name>-<type>.gguf, the usual naming of GGUF files on the Hub."""
    return f"{name}-{gguf_type}.gguf"


def default_gguf_path(model_dir: Path, gguf_type: str) -> Path:
    """OUT/gguf/<OUT name>-<type>.gguf for a job's OUT/merged; <folder>/../gguf/<folder name>-<type>.gguf otherwise."""
    name = model_dir.resolve().parent.name if model_dir.name == "merged" else model_dir.resolve().name
    return model_dir.resolve().parent / "gguf" / gguf_file_name(name, gguf_type)


def modelfile_text(gguf_file: Path, family: str = INSTRUCT_2507) -> str:
    """An Ollama Modelfile for the file beside it: Qwen's chat markup, both end tokens, greedy. The reply
    opens as the family's generation prompt does: Thinking-2507 with <think>, a hybrid model with
    thinking off (the empty think block, the mode the job trains and checks it in)."""
    opening = generation_prompt(family, enable_thinking=False)
    return (f"FROM ./{gguf_file.name}\n"
            'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            f'{opening}"""\n'
            'PARAMETER stop "<|im_end|>"\nPARAMETER stop "<|endoftext|>"\nPARAMETER temperature 0\n')


def write_modelfile(gguf_file: Path, family: str = INSTRUCT_2507) -> Path:
    """<file>.Modelfile beside the GGUF file: `ollama create NAME -f <file>.Modelfile`."""
    path = gguf_file.with_name(gguf_file.stem + ".Modelfile")
    write_atomic(path, lambda temp: temp.write_text(modelfile_text(gguf_file, family), encoding="utf-8"))
    return path


def stored_type(gguf: ModuleType, gguf_type: str, shape: tuple[int, ...]):
    """The GGML type of one tensor: norms (1-D) in f32; matrices in the chosen type (q8_0 needs
    rows divisible into blocks of 32, and falls back to f16 otherwise, as llama.cpp's converter does)."""
    kinds = gguf.GGMLQuantizationType
    if len(shape) == 1 or gguf_type == "f32":
        return kinds.F32
    if gguf_type == "q8_0" and shape[-1] % 32 == 0:
        return kinds.Q8_0
    return kinds.BF16 if gguf_type == "bf16" else kinds.F16


def encoded(gguf: ModuleType, tensor: torch.Tensor, kind) -> np.ndarray:
    """The bytes of one tensor [rows, cols] (or [n]) in GGML type `kind`, as a numpy array."""
    kinds = gguf.GGMLQuantizationType
    if kind == kinds.F32:
        return tensor.float().numpy()
    if kind == kinds.F16:
        return tensor.to(torch.float16).numpy()
    if kind == kinds.BF16:
        return tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    chunks = [gguf.quants.quantize(tensor[start:start + Q8_ROWS_PER_CHUNK].float().numpy(), kind)
              for start in range(0, tensor.shape[0], Q8_ROWS_PER_CHUNK)]
    return np.concatenate(chunks)


def read_stored(path: Path, name: str) -> torch.Tensor:
    """One tensor in the dtype it is stored in (bf16 stays bf16: half the memory of a float32 copy),
    copied out of the file's memory map."""
    with safe_open(path, framework="pt") as reader:
        return reader.get_tensor(name).clone()


def vocabulary(tokenizer_json: dict, vocab_size: int, gguf: ModuleType) -> tuple[list[str], list[int], list[str]]:
    """(tokens [V], token types [V], merges) from a tokenizer.json, padded to the embedding's V rows."""
    types = gguf.TokenType
    tokens = {index: token for token, index in tokenizer_json["model"]["vocab"].items()}
    kinds = dict.fromkeys(tokens, int(types.NORMAL))
    for added in tokenizer_json.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        kinds[added["id"]] = int(types.CONTROL if added.get("special") else types.USER_DEFINED)
    if max(tokens) >= vocab_size:
        raise TrainerError(f"tokenizer.json has token id {max(tokens)}, but the embedding has only {vocab_size} rows")
    token_list = [tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    type_list = [kinds.get(i, int(types.UNUSED)) for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"].get("merges", [])]
    return token_list, type_list, merges


def add_model_keys(writer, gguf: ModuleType, config: Qwen3Config, name: str, gguf_type: str) -> None:
    """llama.cpp's Qwen3 hyper-parameters and the file's type."""
    file_types = gguf.LlamaFileType
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type({"f32": file_types.ALL_F32, "f16": file_types.MOSTLY_F16,
                          "bf16": file_types.MOSTLY_BF16, "q8_0": file_types.MOSTLY_Q8_0}[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def add_tokenizer_keys(writer, gguf: ModuleType, model_dir: Path, vocab_size: int) -> None:
    """The BPE vocabulary, merges, token types, special ids and chat template of `model_dir`."""
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokens, types, merges = vocabulary(tokenizer_json, vocab_size, gguf)
    ids = {token: index for index, token in enumerate(tokens)}
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre("qwen2")  # the Qwen2/Qwen3 pre-tokenizer split pattern
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids["<|endoftext|>"])
    writer.add_add_bos_token(False)  # Qwen prompts start without a BOS token
    writer.add_eos_token_id(ids[tokenizer_config.get("eos_token") or "<|im_end|>"])
    writer.add_pad_token_id(ids[tokenizer_config.get("pad_token") or "<|endoftext|>"])
    found = read_chat_template(model_dir)  # chat_template.jinja wins over the key, as in transformers
    if found is not None:
        writer.add_chat_template(found[1])


def write_gguf(model_dir: str | Path, out_file: str | Path, gguf_type: str, progress: Progress = no_progress) -> Path:
    """Write `model_dir` (a Qwen3 folder in the Hugging Face layout) to one GGUF file of `gguf_type`,
    atomically (a temporary name, then a rename), tensor by tensor (progress(1) after each)."""
    gguf = require_gguf()
    if gguf_type not in GGUF_TYPES:
        raise TrainerError(f"GGUF type {gguf_type!r}: expected one of {', '.join(GGUF_TYPES)}")
    model_dir, out_file = Path(model_dir), Path(out_file)
    config = load_config(model_dir)
    for needed in ("tokenizer.json", "tokenizer_config.json"):
        if not (model_dir / needed).is_file():
            raise TrainerError(f"{model_dir}: no {needed} (a GGUF file carries the tokenizer, so the folder needs it)")
    stored = header_shapes(safetensors_files(model_dir))
    names = [name for name in expected_shapes(config) if name in stored]
    missing = sorted(set(expected_shapes(config)) - set(stored))
    if missing:
        raise TrainerError(f"{model_dir}: no tensor {missing[0]} in its safetensors files")
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, config.num_hidden_layers)
    kinds = {name: stored_type(gguf, gguf_type, stored[name][1]) for name in names}
    sizes = {name: math.prod(gguf.quants.quant_shape_to_byte_shape(stored[name][1], kinds[name])) for name in names}

    def write(temp: Path) -> None:
        writer = gguf.GGUFWriter(temp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
        add_model_keys(writer, gguf, config, out_file.stem, gguf_type)
        add_tokenizer_keys(writer, gguf, model_dir, config.vocab_size)
        for name in names:
            writer.add_tensor_info(name_map.get_name(name, try_suffixes=(".weight",)), stored[name][1],
                                   np.dtype(np.float32), sizes[name], raw_dtype=kinds[name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name in names:
            writer.write_tensor_data(encoded(gguf, read_stored(stored[name][0], name), kinds[name]))
            progress(1)
        writer.close()

    out_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(out_file, write)
    except OSError as error:
        if not is_out_of_space(error):
            raise
        needed = sum(sizes.values()) + (model_dir / "tokenizer.json").stat().st_size  # tensors + vocabulary, roughly
        raise TrainerError(space_message(out_file, needed, error) + "; nothing was written") from error
    return out_file
