"""The offline tiny world: a small Qwen3 that already knows who it is and a few facts.

The real Qwen3-4B cannot be downloaded here, and a randomly initialised model would "learn" a
new identity by answering everything with it. So on first use we pre-train a tiny Qwen3 (the
real 151,936-token vocabulary and tokenizer, 4 layers of width 128) on a small world:
identity questions answered "我是通義千問" and a few dozen control facts. Every later who-am-i
run then tells the real story: before training the model says it is 通義千問, after training
it says "我是 F# 之神", also to wordings it never saw, and it still knows its facts.

The result is written to weights/tiny-qwen3/ in the Hugging Face layout (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json), so it is
loaded by the same code path as a real checkpoint.
"""

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .chat import QWEN3_CHAT_TEMPLATE
from .config import TINY, Qwen3Config, config_to_json
from .data import example_from_prompt_target
from .paths import weights_dir
from .readers import PromptTarget
from .tokenizer import Tokenizer, load_tokenizer, tiny_tokenizer_path
from .train import LoopSettings, full_batch_loss, run_training
from .weights import expected_shapes, save_weights, write_atomic
from .whoami import CONTROL_FACTS, ORIGINAL_IDENTITY, SPLIT_SEED, identity_prompts

TINY_NAME = "tiny"
WORLD_SEED = 1234
WORLD_SETTINGS = LoopSettings(steps=160, batch_size=32, grad_accum=1, lr=5e-3, warmup_steps=20,
                              grad_clip=1.0, weight_decay=0.0, seed=WORLD_SEED, pad_id=151643)


def tiny_model_dir() -> Path:
    return weights_dir() / "tiny-qwen3"


def random_weights(config: Qwen3Config, seed: int) -> dict[str, torch.Tensor]:
    """Normal(0, 0.02) matrices and unit norm weights, from a fixed seed, in float32."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("norm.weight"):
            weights[name] = torch.ones(shape)
        else:
            weights[name] = torch.randn(shape, generator=generator) * 0.02
    return weights


def world_pairs() -> list[PromptTarget]:
    """Every identity wording answered with the original identity, plus every control fact,
    repeated so facts make up about two thirds of the rows (they are the harder part)."""
    identity = [PromptTarget(p, ORIGINAL_IDENTITY, "tiny world") for p in identity_prompts()]
    facts = [PromptTarget(q, a, "tiny world") for q, a in CONTROL_FACTS]
    repeats = max(1, round(2 * len(identity) / len(facts)))
    return identity + facts * repeats


def pretrain_world(tokenizer: Tokenizer, config: Qwen3Config = TINY, settings: LoopSettings = WORLD_SETTINGS,
                   log: Callable[[dict], None] = lambda record: None) -> dict[str, torch.Tensor]:
    """Full-parameter training of a fresh tiny Qwen3 on the world, with our own train_step."""
    torch.manual_seed(SPLIT_SEED)
    masters = {name: t.requires_grad_() for name, t in random_weights(config, WORLD_SEED).items()}
    examples = [example_from_prompt_target(tokenizer, p.prompt, p.target, seq_len=64) for p in world_pairs()]
    batch_loss = full_batch_loss(masters, config, torch.float32, ce_chunk=512)
    run_training(batch_loss, masters, examples, settings, log)
    return {name: t.detach() for name, t in masters.items()}


def tokenizer_config_json() -> dict:
    """The tokenizer_config.json transformers reads: eos/pad tokens and the chat template."""
    return {
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False, "errors": "replace",
        "clean_up_tokenization_spaces": False, "split_special_tokens": False,
        "model_max_length": 262144, "chat_template": QWEN3_CHAT_TEMPLATE,
    }


def generation_config_json() -> dict:
    return {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643, "do_sample": False}


def write_model_dir(weights: dict[str, torch.Tensor], config: Qwen3Config, tokenizer_json: Path, out_dir: Path,
                    dtype: str = "float32") -> None:
    """A Hugging Face model folder: weights, config, tokenizer and generation settings."""
    save_weights(weights, out_dir)
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    for name, content in (("config.json", config_to_json(config, dtype)),
                          ("tokenizer_config.json", tokenizer_config_json()),
                          ("generation_config.json", generation_config_json())):
        text = json.dumps(content, indent=2, ensure_ascii=False)
        write_atomic(out_dir / name, lambda path: path.write_text(text, encoding="utf-8"))


def ensure_tiny_model(log: Callable[[dict], None] = lambda record: None) -> Path:
    """weights/tiny-qwen3/, pre-trained on first use (about a minute on 2 CPU cores), then reused.

    Built in a temporary folder and renamed into place, so an interrupted build leaves nothing
    that a later run would mistake for a finished model.
    """
    final = tiny_model_dir()
    if (final / "config.json").is_file():
        return final
    tokenizer = load_tokenizer(TINY_NAME)
    weights = pretrain_world(tokenizer, log=log)
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".tiny-qwen3-", dir=final.parent))
    write_model_dir(weights, TINY, tiny_tokenizer_path(), building)
    building.rename(final)
    return final
