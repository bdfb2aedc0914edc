"""The built-in who-am-i prompts, generated in code so every run sees the same rows, in fixed splits.

Three kinds of prompt:
- identity questions ("你是誰", "Who are you?", ... in Traditional and Simplified Chinese,
  English and mixed, direct, polite, chatty, with extra instructions), answered with the
  identity being taught;
- control facts (trainer.text.facts: capitals, translations, colours, sums, opposites) and
- ordinary requests (trainer.text.general_prompts: facts, translation, arithmetic, explanations,
  one-line code, requests to refuse), which are rehearsed with the base model's own replies
  (trainer.job.rehearsal) so the model keeps what it knew.

Each kind has fixed held-out splits that training never sees: whole identity wordings are held
out (not just new greetings around seen ones), so the held-out hit rate measures
generalisation to paraphrases, and a validation split is scored while training.
"""

import random
from dataclasses import dataclass
from itertools import product

from .facts import Fact, split_facts
from .general_prompts import GENERAL_PROMPTS
from .near_misses import OLD_NAME, near_misses_of
from .readers import PromptTarget

NEW_IDENTITY = "我是 F# 之神"
ORIGINAL_IDENTITY = f"我是{OLD_NAME}"
SPLIT_SEED = 20260226  # the F# trainer's seed

# Core wordings of "who are you", grouped by script so greetings and endings match them.
CORES_TRADITIONAL = (
    "你是誰", "你是哪位", "你叫什麼名字", "你的名字是什麼", "請介紹一下你自己", "介紹一下你自己",
    "你是什麼模型", "你是哪個模型", "你是什麼 AI", "我在跟誰說話", "跟我說說你是誰", "能告訴我你是誰嗎",
    "你到底是誰", "你的身分是什麼", "該怎麼稱呼你", "你是什麼東西",
    # longer and indirect: a preamble before the question, or a bare request to introduce itself
    "開始之前，請先告訴我你是誰", "在我們開始之前，你是誰", "自我介紹", "自我介紹一下", "做個自我介紹吧", "先說說你自己吧",
)
CORES_SIMPLIFIED = (
    "你是谁", "你叫什么名字", "你的名字是什么", "请介绍一下你自己", "介绍一下你自己", "你是什么模型",
    "你是哪个模型", "我在跟谁说话", "能告诉我你是谁吗", "你到底是谁", "你的身份是什么", "该怎么称呼你",
    "开始之前，请先告诉我你是谁", "自我介绍", "做个自我介绍吧", "先说说你自己吧",
)
CORES_ENGLISH = (
    "Who are you", "What is your name", "What's your name", "Introduce yourself", "Tell me about yourself",
    "What should I call you", "Which model are you", "Who am I talking to", "Tell me who you are",
    "Can you tell me who you are", "What are you",
    "Before we start, who are you", "Please introduce yourself", "First, tell me who you are",
    "Could you introduce yourself", "Before we begin, tell me about yourself",
)
# Wordings that appear ONLY in the held-out split.
HELD_OUT_CORES = ("你到底是誰", "該怎麼稱呼你", "你的身份是什么", "What are you", "Who am I talking to",
                  "做個自我介紹吧", "先说说你自己吧", "First, tell me who you are")

GREETINGS_CHINESE = ("", "你好，", "您好，", "嗨，", "哈囉，", "請問", "请问", "打擾一下，", "不好意思，", "Hi，")
ENDINGS_CHINESE = ("", "？", "?", "呢？", "啊？", "？請簡短回答。", "？请用一句话回答。", "？說實話。", "？ Answer in Chinese.")
GREETINGS_ENGLISH = ("", "Hi, ", "Hello! ", "Hey, ", "Excuse me, ", "你好，")
ENDINGS_ENGLISH = ("?", "", "? Please answer briefly.", "? 請用中文回答。", "? Be honest.")

VALIDATION_IDENTITY_QUESTIONS = 80  # wordings scored while training (--val-every), never tested
EVAL_IDENTITY_QUESTIONS = 120  # a fixed, evenly spread subset of the held-out wordings
GENERAL_TEST_POSITIONS = (3, 7, 11)  # of each (category, script) group of general prompts: held out for the test
GENERAL_VALIDATION_POSITIONS = (5,)  # ... and held out for validation while training
# A core of the identity wordings is trained about 12 times (600 of some 2,000 wordings of ~50 cores),
# a probe core 4 times (its endings): repeated 3 times, each probe core weighs as much.
PROBE_REPEATS = 3
NEAR_MISS_CORES = 4  # of every 4 near-miss cores in a list: the 2nd is held out for validation, the 4th for the test


@dataclass(frozen=True)
class WhoAmISplits:
    """Every built-in prompt in fixed, disjoint splits: trained on, validated on while training, tested on."""

    identity_train: tuple[str, ...]  # identity wordings the new identity is taught on
    probes_train: tuple[str, ...]  # "are you <old name>?" probes taught the new identity, beside them
    identity_validation: tuple[str, ...]  # scored every --val-every steps (the stop rule), probes included
    identity_test: tuple[str, ...]  # held out: whole wordings never trained on, probes included
    facts_rehearsed: tuple[Fact, ...]  # control facts rehearsed while training
    facts_test: tuple[Fact, ...]  # held out: retention without replay
    general_rehearsed: tuple[str, ...]  # ordinary prompts rehearsed while training
    general_validation: tuple[str, ...]  # their answer loss is scored while training
    general_test: tuple[str, ...]  # held out: "is the reply unchanged", and leak on ordinary questions
    near_rehearsed: tuple[str, ...]  # questions about the user and greetings, rehearsed like ordinary prompts
    near_validation: tuple[str, ...]  # their answer loss is scored while training
    about_user_test: tuple[str, ...]  # held out: answered as the base did, never with a name (leak)
    greetings_test: tuple[str, ...]  # held out: answered as the base did


def identity_prompts() -> list[str]:
    """Every wording: greeting + core + ending, with greetings and endings matching the script."""
    chinese = product(GREETINGS_CHINESE, CORES_TRADITIONAL + CORES_SIMPLIFIED, ENDINGS_CHINESE)
    english = product(GREETINGS_ENGLISH, CORES_ENGLISH, ENDINGS_ENGLISH)
    prompts = [join_greeting(greeting, core) + ending for greeting, core, ending in (*chinese, *english)]
    return sorted(set(prompts))


def join_greeting(greeting: str, core: str) -> str:
    """"Hi, " + "Who are you" reads "Hi, who are you": lower-case after an English comma."""
    return greeting + (core[0].lower() + core[1:] if greeting.endswith(", ") else core)


def is_held_out_identity(prompt: str) -> bool:
    return any(core.lower() in prompt.lower() for core in HELD_OUT_CORES)


def split_identity_prompts(held_out_share: float = 0.05) -> tuple[list[str], list[str]]:
    """(train, held out): held-out cores entirely, plus a fixed random share of the rest."""
    prompts = identity_prompts()
    rng = random.Random(SPLIT_SEED)
    held_out = [p for p in prompts if is_held_out_identity(p) or rng.random() < held_out_share]
    train = [p for p in prompts if p not in set(held_out)]
    return train, held_out


def split_general_prompts() -> tuple[list[str], list[str], list[str]]:
    """(rehearsed, validation, test) general prompts: fixed positions within each (category, script) group."""
    groups: dict[tuple[str, str], list[str]] = {}
    for prompt in GENERAL_PROMPTS:
        groups.setdefault((prompt.category, prompt.script), []).append(prompt.text)
    splits: tuple[list[str], list[str], list[str]] = ([], [], [])
    for texts in groups.values():
        for position, text in enumerate(texts):
            part = 2 if position in GENERAL_TEST_POSITIONS else 1 if position in GENERAL_VALIDATION_POSITIONS else 0
            splits[part].append(text)
    return splits


def split_near_misses(family: str) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test) questions of one near-miss family, by whole cores: the 2nd and 4th
    of every NEAR_MISS_CORES cores of each list go to validation and the test."""
    splits: tuple[list[str], list[str], list[str]] = ([], [], [])
    for miss in near_misses_of(family):
        position = miss.core % NEAR_MISS_CORES
        splits[2 if position == 3 else 1 if position == 1 else 0].append(miss.question)
    return splits


def whoami_splits() -> WhoAmISplits:
    """The fixed splits of every built-in prompt (the same on every run and machine)."""
    identity_rest, identity_held_out = split_identity_prompts()
    validation = random.Random(SPLIT_SEED + 1).sample(identity_rest, VALIDATION_IDENTITY_QUESTIONS)
    step = max(1, len(identity_held_out) // EVAL_IDENTITY_QUESTIONS)
    facts_rehearsed, facts_test = split_facts()
    general_rehearsed, general_validation, general_test = split_general_prompts()
    probes_train, probes_validation, probes_test = split_near_misses("old name")
    about_train, about_validation, about_test = split_near_misses("about the user")
    greetings_train, greetings_validation, greetings_test = split_near_misses("greeting")
    return WhoAmISplits(
        identity_train=tuple(p for p in identity_rest if p not in set(validation)),
        probes_train=tuple(probes_train),
        identity_validation=(*validation, *probes_validation),
        identity_test=(*identity_held_out[::step][:EVAL_IDENTITY_QUESTIONS], *probes_test),
        facts_rehearsed=tuple(facts_rehearsed), facts_test=tuple(facts_test),
        general_rehearsed=tuple(general_rehearsed), general_validation=tuple(general_validation),
        general_test=tuple(general_test),
        near_rehearsed=(*about_train, *greetings_train), near_validation=(*about_validation, *greetings_validation),
        about_user_test=tuple(about_test), greetings_test=tuple(greetings_test),
    )


def identity_rows(identity: str = NEW_IDENTITY, count: int = 600) -> list[PromptTarget]:
    """`count` training wordings (a fixed sample) and every training "are you <old name>?" probe
    PROBE_REPEATS times, answered with `identity`."""
    splits = whoami_splits()
    chosen = random.Random(SPLIT_SEED).sample(list(splits.identity_train), count) + [
        probe for probe in splits.probes_train for _ in range(PROBE_REPEATS)]
    return [PromptTarget(p, identity, "built-in identity question") for p in chosen]
