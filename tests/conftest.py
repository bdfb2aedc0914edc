"""Fixtures shared across test files."""

import pytest

from trainer.tokenizer import Tokenizer, load_tokenizer


@pytest.fixture(scope="session")
def qwen_tokenizer() -> Tokenizer:
    """The real Qwen3 tokenizer, built offline once and cached under weights/."""
    return load_tokenizer("tiny")
