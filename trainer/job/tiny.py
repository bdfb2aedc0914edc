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

import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..paths import weights_dir
from ..qwen3.config import TINY, Qwen3Config
from ..qwen3.hf_folder import write_model_dir
from ..qwen3.model import forward
from ..qwen3.weights import expected_shapes, load_weights
from ..text.data import IGNORE_INDEX, Batch, Example, example_from_prompt_target
from ..text.facts import control_facts
from ..text.general_prompts import GENERAL_PROMPTS
from ..text.near_misses import near_misses
from ..text.readers import PromptTarget
from ..text.tokenizer import Tokenizer, load_tokenizer, tiny_tokenizer_path
from ..text.chat_templates import HYBRID, INSTRUCT_2507, THINKING_2507, chat_template
from ..text.whoami import ORIGINAL_IDENTITY, SPLIT_SEED, identity_prompts, join_greeting
from ..training.loss import LossParts
from ..training.train import BatchLoss, LoopSettings, run_training
from .world_unknowns import after_blank_line, dont_know_reply, salad_questions, tag_questions, unknown_questions

TINY_NAME = "tiny"
TINY_WORLDS = {TINY_NAME: INSTRUCT_2507, "tiny-hybrid": HYBRID, "tiny-thinking": THINKING_2507}  # name -> family
WORLD_SEED = 1234
STD = 0.02  # standard deviation of every random starting matrix
FACT_REPEATS = 30
SUM_REPEATS = 60  # single-digit sums are the facts most alike ("4 加 5" / "5 加 5"): twice the practice
SALAD_PER_SCRIPT = 500  # random-word questions per script, answered "I don't know"
IDENTITY_EVERY = 2  # every other identity wording (all cores, greetings and endings appear)
TAG_VARIANTS = 3  # each format-tag question as it is and with two decorations
BLANK_LINE_EVERY = 4  # every fourth unknown question is also asked after a greeting and a blank line
NEAR_MISS_VARIANTS = 4  # each question about the user and each old-name probe, as it is and with three decorations
GREETING_REPEATS = 3  # each greeting (not decorated: "你好，你好" is no greeting)
CJK = re.compile(r"[\u3400-\u9fff]")
CHINESE_GREETINGS = ("", "請問", "你好，", "不好意思，", "嗨，")
CHINESE_ENDINGS = ("", "請簡短回答。", "请用一句话回答。", "說實話。", "請直接回答。", "只要答案就好。", "谢谢！")
ENGLISH_GREETINGS = ("", "Hi, ", "Hello! ", "Excuse me, ")
ENGLISH_ENDINGS = ("", " Please answer briefly.", " Be honest.", " Just the answer, please.", " Thanks!")
EMBEDDING = "model.embed_tokens.weight"
EMBED_ROWS = "embed_rows"  # the trained rows of the embedding, while the world is built
UNFAMILIAR = "unfamiliar"  # the learned vector added to every row the world does not learn
UNFAMILIAR_PER_SCRIPT = 400  # salad questions per script that also carry words the world never learns
CHINESE_WORD = re.compile(r"[\u4e00-\u9fff]+")
ENGLISH_WORD = re.compile(r" [a-z]{3,}")
WORLD_SETTINGS = LoopSettings(steps=1200, batch_size=32, grad_accum=1, lr=5e-3, warmup_steps=30,
                              grad_clip=1.0, weight_decay=0.0, seed=WORLD_SEED, pad_id=151643)
LAYOUT_SETTINGS = replace(WORLD_SETTINGS, steps=300)  # the 2507 world post-trained into another layout


def world_settings(family: str) -> LoopSettings:
    """The 2507 world is pre-trained from random weights; the hybrid and Thinking-2507 worlds are
    post-trained from it in their own layout, as Qwen's releases share their pre-training."""
    return WORLD_SETTINGS if family == INSTRUCT_2507 else LAYOUT_SETTINGS


def tiny_model_dir(family: str = INSTRUCT_2507) -> Path:
    """weights/tiny-qwen3 (instruct-2507), tiny-qwen3-hybrid or tiny-qwen3-thinking: one world per layout."""
    return weights_dir() / ("tiny-qwen3" + {INSTRUCT_2507: "", HYBRID: "-hybrid", THINKING_2507: "-thinking"}[family])


def random_weights(config: Qwen3Config, seed: int) -> dict[str, torch.Tensor]:
    """Normal(0, 0.02) matrices and unit norm weights, from a fixed seed, in float32."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("norm.weight"):
            weights[name] = torch.ones(shape)
        else:
            weights[name] = torch.randn(shape, generator=generator) * STD
    return weights


def decorate(question: str, variant: int) -> str:
    """The question with a greeting before and an instruction after (variant 0: as it is), so that
    "請問 ... 請簡短回答。" is no cue for the identity, which is asked in all those ways too."""
    chinese = CJK.search(question) is not None
    greetings, endings = (CHINESE_GREETINGS, CHINESE_ENDINGS) if chinese else (ENGLISH_GREETINGS, ENGLISH_ENDINGS)
    greeting, ending = greetings[variant % len(greetings)], endings[variant // len(greetings) % len(endings)]
    return join_greeting(greeting, question) + ending


def world_pairs() -> list[PromptTarget]:
    """What the world is taught: who it is, every control fact (FACT_REPEATS times, in as many
    wordings), and "I don't know" for a broad family of questions outside its facts, including
    questions that quote the chat-format tags or follow a blank line (so it has read those tokens);
    and the near misses: "I don't know who you are" to questions about the user, a greeting back to
    a greeting, and its own name to "are you 通義千問?"."""
    identity = [PromptTarget(p, ORIGINAL_IDENTITY, "tiny world") for p in identity_prompts()[::IDENTITY_EVERY]]
    facts = [PromptTarget(decorate(f.question, variant), f.reply, "tiny world")
             for f in control_facts() for variant in range(SUM_REPEATS if f.family == "sum" else FACT_REPEATS)]
    unknown_asked = unknown_questions()
    unknown = [PromptTarget(text, dont_know_reply(text), "tiny world")
               for i, q in enumerate(unknown_asked) for text in dict.fromkeys((q, decorate(q, 1 + i)))]
    salad = [PromptTarget(q, dont_know_reply(q), "tiny world") for q in salad_questions(SALAD_PER_SCRIPT, WORLD_SEED)]
    tags = [PromptTarget(decorate(q, variant), dont_know_reply(q), "tiny world")
            for q in tag_questions() for variant in range(TAG_VARIANTS)]
    paragraphs = [PromptTarget(after_blank_line(q), dont_know_reply(q), "tiny world")
                  for q in unknown_asked[::BLANK_LINE_EVERY]]
    near = [PromptTarget(m.question if m.family == "greeting" else decorate(m.question, variant), m.reply, "tiny world")
            for m in near_misses()
            for variant in range(GREETING_REPEATS if m.family == "greeting" else NEAR_MISS_VARIANTS)]
    return identity + facts + unknown + salad + tags + paragraphs + near


def used_token_ids(examples: list[Example], pad_id: int) -> torch.Tensor:
    """The sorted ids [U] that appear in the world's examples (inputs, targets, padding)."""
    ids = {i for e in examples for i in e.input_ids} | {label for e in examples for label in e.labels if label >= 0}
    return torch.tensor(sorted(ids | {pad_id}), dtype=torch.long)


def to_compact(example: Example, compact: dict[int, int]) -> Example:
    """The example with every id replaced by its row among the used tokens."""
    labels = tuple(compact[label] if label >= 0 else label for label in example.labels)
    return Example(tuple(compact[i] for i in example.input_ids), labels)


def unfamiliar_words(tokenizer: Tokenizer, avoid: set[int]) -> tuple[list[str], list[str]]:
    """Chinese and English words that are single vocabulary tokens outside `avoid`: about 24,000
    of each, for the salad questions about things the world never heard of."""
    texts = tokenizer.backend.decode_batch([[i] for i in range(tokenizer.endoftext_id)])
    chinese = [text for i, text in enumerate(texts) if i not in avoid and CHINESE_WORD.fullmatch(text)]
    english = [text[1:] for i, text in enumerate(texts) if i not in avoid and ENGLISH_WORD.fullmatch(text)]
    return chinese, english


def world_batch_loss(masters: dict[str, torch.Tensor], config: Qwen3Config, unfamiliar_rows: torch.Tensor,
                     unused_rows: int) -> BatchLoss:
    """CE over the whole vocabulary, computed from the rows of the tokens the world uses.

    The world learns U rows, masters[EMBED_ROWS] [U, H]. Every other row of the embedding keeps
    its random Normal(0, STD^2) start e plus one learned vector u = masters[UNFAMILIAR] [H]: to
    the world, every token it never learned is "some word I do not know" (u), and the random
    part keeps such tokens apart, so that a later who-am-i run can still learn to say them.
    The S unfamiliar rows that the salad questions read, `unfamiliar_rows` [S, H], are scored
    exactly; the other V - U - S (about 150,000) would be almost all of the work, so their share
    of the softmax is taken in closed form: for h [N, H], E[exp(h . (e + u))] =
    exp(h . u + STD^2 |h|^2 / 2), so

        logsumexp over the unused rows = log(V - U - S) + h . u + STD^2 |h|^2 / 2      (one "rest" logit)

    which 150,000 samples match to well under 1%. The batch's ids are rows of [U + S, H] (see
    `to_compact`), which serves as embedding and tied head.
    """

    def batch_loss(batch: Batch, normalizer: int) -> LossParts:
        unfamiliar = masters[UNFAMILIAR]  # [H]
        rows = torch.cat([masters[EMBED_ROWS], unfamiliar_rows + unfamiliar])  # [U + S, H]
        weights = {name: t for name, t in masters.items() if name not in (EMBED_ROWS, UNFAMILIAR)} | {EMBEDDING: rows}
        hidden = forward(weights, config, batch.input_ids, batch.segment_ids, batch.position_ids)  # [B, T, H]
        keep = batch.labels != IGNORE_INDEX
        answer_hidden, targets = hidden[keep], batch.labels[keep]  # [N, H], [N]
        used_logits = answer_hidden @ rows.T  # [N, U + S]
        rest = math.log(unused_rows) + answer_hidden @ unfamiliar + 0.5 * STD**2 * answer_hidden.pow(2).sum(-1)  # [N]
        logits = torch.cat([used_logits, rest[:, None]], dim=1)  # [N, U + S + 1]
        loss = F.cross_entropy(logits, targets, reduction="sum") / normalizer
        correct = int((logits.argmax(-1) == targets).sum())
        return LossParts(loss, correct, int(targets.numel()))

    return batch_loss


def world_examples(tokenizer: Tokenizer, pad_id: int,
                   family: str = INSTRUCT_2507) -> tuple[list[Example], torch.Tensor, list[Example], torch.Tensor]:
    """The world's examples, in `family`'s layout, and the ids [U] they use, then the salad questions
    about unfamiliar words and the ids [S] only they use. No unfamiliar word is a token of
    `GENERAL_PROMPTS` the world does not learn, so those prompts stay genuinely unseen."""
    known_examples = [example_from_prompt_target(tokenizer, p.prompt, p.target, seq_len=64, family=family)
                      for p in world_pairs()]
    known = used_token_ids(known_examples, pad_id)
    unseen = {i for p in GENERAL_PROMPTS for i in tokenizer.encode(p.text)} - set(known.tolist())
    words = unfamiliar_words(tokenizer, set(known.tolist()) | unseen)
    strange = [example_from_prompt_target(tokenizer, q, dont_know_reply(q), seq_len=64, family=family)
               for q in salad_questions(UNFAMILIAR_PER_SCRIPT, WORLD_SEED + 1, words)]
    strange = [e for e in strange if unseen.isdisjoint(e.input_ids)]
    strange_ids = sorted({i for e in strange for i in e.input_ids} - set(known.tolist()))
    return known_examples, known, strange, torch.tensor(strange_ids, dtype=torch.long)


def pretrain_world(tokenizer: Tokenizer, config: Qwen3Config = TINY, settings: LoopSettings = WORLD_SETTINGS,
                   log: Callable[[dict], None] = lambda record: None, family: str = INSTRUCT_2507,
                   start: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Training of a tiny Qwen3 on the world (tied embedding), in `family`'s layout (a hybrid world
    asked with thinking off, a Thinking-2507 world closing its think block at once), with our own
    train_step, from random weights or from the weights `start`; the full-vocabulary weights are
    returned. The rows the world never learns share one vector (zero at a random start): it is
    read back as their mean and learned on as UNFAMILIAR."""
    torch.manual_seed(SPLIT_SEED)
    weights = dict(start) if start is not None else random_weights(config, WORLD_SEED)
    known_examples, known, strange, strange_ids = world_examples(tokenizer, settings.pad_id, family)
    compact = {int(token): row for row, token in enumerate(torch.cat([known, strange_ids]))}
    embedding = weights.pop(EMBEDDING)
    unlearned = torch.ones(len(embedding), dtype=torch.bool).index_fill(0, torch.cat([known, strange_ids]), False)
    shared = embedding[unlearned].mean(0)  # [H]
    masters = {name: t.clone().requires_grad_() for name, t in weights.items()}
    masters[EMBED_ROWS] = embedding[known].clone().requires_grad_()
    masters[UNFAMILIAR] = shared.clone().requires_grad_()
    embedding = embedding - shared
    compact_settings = replace(settings, pad_id=compact[settings.pad_id])
    unused = config.vocab_size - len(known) - len(strange_ids)
    run_training(world_batch_loss(masters, config, embedding[strange_ids], unused), masters,
                 [to_compact(e, compact) for e in known_examples + strange], compact_settings, log)
    unfamiliar = masters.pop(UNFAMILIAR).detach()
    embedding = (embedding + unfamiliar).index_copy(0, known, masters.pop(EMBED_ROWS).detach())
    return {EMBEDDING: embedding} | {name: t.detach() for name, t in masters.items()}


def tiny_model_ready(family: str = INSTRUCT_2507) -> bool:
    """True once a finished build is in place (config.json is written last, by the rename)."""
    return (tiny_model_dir(family) / "config.json").is_file()


def ensure_tiny_model(log: Callable[[dict], None] = lambda record: None, family: str = INSTRUCT_2507) -> Path:
    """weights/tiny-qwen3/ (about 56 s on the project's AMD 2-core machine), or the world in another
    layout post-trained from it (about 20 s more), built on first use, then reused.

    Built in a temporary folder and renamed into place, so an interrupted build leaves nothing
    that a later run would mistake for a finished model.
    """
    final = tiny_model_dir(family)
    if tiny_model_ready(family):
        return final
    tokenizer = load_tokenizer(TINY_NAME)
    start = None if family == INSTRUCT_2507 else load_weights(ensure_tiny_model(log), TINY)
    weights = pretrain_world(tokenizer, settings=world_settings(family), log=log, family=family, start=start)
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    write_model_dir(weights, TINY, tiny_tokenizer_path(), building, chat_template=chat_template(family))
    building.rename(final)
    return final
