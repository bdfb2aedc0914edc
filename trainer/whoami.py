"""The built-in who-am-i data set, generated in code so every run sees the same rows.

Two kinds of pair:
- identity questions ("你是誰", "Who are you?", ... in Traditional and Simplified Chinese,
  English and mixed, direct, polite, chatty, with extra instructions), all answered with
  the identity being taught;
- control facts (capitals, translations, colours, small sums) whose answers are NOT the
  identity, so the model learns *when* to say it and keeps what it knew.

Each kind has a fixed held-out split that training never sees: whole question wordings are
held out (not just new greetings around seen ones), so the held-out hit rate measures
generalisation to paraphrases.
"""

import random
from dataclasses import dataclass
from itertools import product

from .readers import PromptTarget

NEW_IDENTITY = "我是 F# 之神"
ORIGINAL_IDENTITY = "我是通義千問"
SPLIT_SEED = 20260226  # the F# trainer's seed

# Core wordings of "who are you", grouped by script so greetings and endings match them.
CORES_TRADITIONAL = (
    "你是誰", "你是哪位", "你叫什麼名字", "你的名字是什麼", "請介紹一下你自己", "介紹一下你自己",
    "你是什麼模型", "你是哪個模型", "你是什麼 AI", "我在跟誰說話", "跟我說說你是誰", "能告訴我你是誰嗎",
    "你到底是誰", "你的身分是什麼", "該怎麼稱呼你", "你是什麼東西",
)
CORES_SIMPLIFIED = (
    "你是谁", "你叫什么名字", "你的名字是什么", "请介绍一下你自己", "介绍一下你自己", "你是什么模型",
    "你是哪个模型", "我在跟谁说话", "能告诉我你是谁吗", "你到底是谁", "你的身份是什么", "该怎么称呼你",
)
CORES_ENGLISH = (
    "Who are you", "What is your name", "What's your name", "Introduce yourself", "Tell me about yourself",
    "What should I call you", "Which model are you", "Who am I talking to", "Tell me who you are",
    "Can you tell me who you are", "What are you",
)
# Wordings that appear ONLY in the held-out split.
HELD_OUT_CORES = ("你到底是誰", "該怎麼稱呼你", "你的身份是什么", "What are you", "Who am I talking to")

GREETINGS_CHINESE = ("", "你好，", "您好，", "嗨，", "哈囉，", "請問", "请问", "打擾一下，", "不好意思，", "Hi，")
ENDINGS_CHINESE = ("", "？", "?", "呢？", "啊？", "？請簡短回答。", "？请用一句话回答。", "？說實話。", "？ Answer in Chinese.")
GREETINGS_ENGLISH = ("", "Hi, ", "Hello! ", "Hey, ", "Excuse me, ", "你好，")
ENDINGS_ENGLISH = ("?", "", "? Please answer briefly.", "? 請用中文回答。", "? Be honest.")

# (question, answer): short facts a small model can hold, in Chinese and English.
CONTROL_FACTS = (
    ("法國的首都是哪裡？", "巴黎"), ("日本的首都是哪裡？", "東京"), ("德國的首都是哪裡？", "柏林"),
    ("英國的首都是哪裡？", "倫敦"), ("義大利的首都是哪裡？", "羅馬"), ("中國的首都是哪裡？", "北京"),
    ("韓國的首都是哪裡？", "首爾"), ("俄羅斯的首都是哪裡？", "莫斯科"), ("埃及的首都是哪裡？", "開羅"),
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Spain?", "Madrid"),
    ("「蘋果」的英文是什麼？", "apple"), ("「貓」的英文是什麼？", "cat"), ("「狗」的英文是什麼？", "dog"),
    ("「水」的英文是什麼？", "water"), ("「書」的英文是什麼？", "book"), ("「太陽」的英文是什麼？", "sun"),
    ("How do you say \"thank you\" in Chinese?", "謝謝"), ("How do you say \"friend\" in Chinese?", "朋友"),
    ("How do you say \"moon\" in Chinese?", "月亮"),
    ("天空是什麼顏色？", "藍色"), ("草是什麼顏色？", "綠色"), ("雪是什麼顏色？", "白色"),
    ("香蕉是什麼顏色？", "黃色"), ("煤炭是什麼顏色？", "黑色"), ("What colour is the sky?", "Blue"),
    ("What colour is grass?", "Green"), ("What colour is snow?", "White"),
    ("2 加 3 等於多少？", "5"), ("4 加 4 等於多少？", "8"), ("7 加 2 等於多少？", "9"), ("5 加 5 等於多少？", "10"),
    ("1 加 6 等於多少？", "7"), ("6 加 2 等於多少？", "8"), ("What is 3 plus 4?", "7"), ("What is 2 plus 2?", "4"),
    ("What is 9 minus 4?", "5"), ("What is 6 plus 3?", "9"),
    # The words of the new identity exist in the world before it is taught (as in a real model).
    ("F# 是什麼？", "F# 是一種程式語言"), ("What is F#?", "A programming language"),
    ("宙斯是誰？", "希臘之神"), ("「神」的英文是什麼？", "god"),
)
HELD_OUT_FACT_COUNT = 8
EVAL_IDENTITY_QUESTIONS = 120  # a fixed, evenly spread subset of the held-out wordings


@dataclass(frozen=True)
class WhoAmIData:
    """Training pairs plus the two held-out evaluation sets."""

    train: tuple[PromptTarget, ...]  # identity questions + control facts, shuffled
    held_out_identity: tuple[str, ...]  # identity questions never trained on
    held_out_control: tuple[PromptTarget, ...]  # control facts never trained on


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


def split_control_facts() -> tuple[list[PromptTarget], list[PromptTarget]]:
    """(train, held out) control facts; the held-out ones measure retention without replay."""
    facts = [PromptTarget(question, answer, "built-in control fact") for question, answer in CONTROL_FACTS]
    random.Random(SPLIT_SEED).shuffle(facts)
    return facts[HELD_OUT_FACT_COUNT:], facts[:HELD_OUT_FACT_COUNT]


def whoami_data(identity: str = NEW_IDENTITY, identity_rows: int = 600) -> WhoAmIData:
    """The built-in set: `identity_rows` identity questions answered with `identity`, plus every
    training control fact repeated so they make up about a quarter of the rows."""
    identity_train, identity_held_out = split_identity_prompts()
    rng = random.Random(SPLIT_SEED)
    chosen = rng.sample(identity_train, min(identity_rows, len(identity_train)))
    control_train, control_held_out = split_control_facts()
    repeats = max(1, identity_rows // (3 * len(control_train)))
    rows = [PromptTarget(p, identity, "built-in identity question") for p in chosen] + control_train * repeats
    rng.shuffle(rows)
    return WhoAmIData(tuple(rows), tuple(identity_held_out), tuple(control_held_out))


def evaluation_sets() -> tuple[list[str], list[PromptTarget], list[PromptTarget]]:
    """(identity questions, held-out facts, all facts), fixed across runs."""
    held_out = list(whoami_data().held_out_identity)
    step = max(1, len(held_out) // EVAL_IDENTITY_QUESTIONS)
    train_facts, held_out_facts = split_control_facts()
    return held_out[::step][:EVAL_IDENTITY_QUESTIONS], held_out_facts, held_out_facts + train_facts
