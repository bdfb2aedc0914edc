"""Near misses: prompts that look like "who are you" and are not, or are but in an unusual shape.

What anyone types first after teaching "你是誰 → 我是 F# 之神" is a question that resembles it:
- questions about the user ("我是誰？", "What's my name?"): a real assistant does not know who the
  user is, and must never answer with its own name;
- greetings ("你好", "Good evening"): answered with a greeting back;
- "are you <old name>?" probes ("你是通義千問嗎？"): about the assistant, so after training they
  get the new name, and never the old one.

Each family is generated from cores in Traditional Chinese, Simplified Chinese and English, with
the reply a base assistant gives (the tiny world is taught exactly these). The job rehearses the
questions about the user and the greetings with the base's own replies, teaches the probes the
new identity, and holds some of each out (`trainer.text.whoami`).
"""

from dataclasses import dataclass

OLD_NAME = "通義千問"


@dataclass(frozen=True)
class NearMiss:
    """One near-miss question, its family, and the reply the base world gives it."""

    question: str
    family: str  # "about the user", "greeting" or "old name"
    script: str  # "zh-Hant", "zh-Hans" or "en"
    reply: str  # the base's answer (the tiny world is taught it)
    core: int  # the position of its core in its list: the job holds out whole cores by it


# (script, cores, reply): "who am I" in every shape a user asks it, answered "I don't know who you are".
ABOUT_THE_USER = (
    ("zh-Hant", ("我是誰", "我叫什麼名字", "你知道我是誰嗎", "你認識我嗎", "你知道我的名字嗎", "我的名字是什麼",
                 "猜猜我是誰", "你記得我是誰嗎", "你猜我叫什麼", "我是哪位"), "我不知道你是誰"),
    ("zh-Hans", ("我是谁", "我叫什么名字", "你知道我是谁吗", "你认识我吗", "你知道我的名字吗", "我的名字是什么",
                 "猜猜我是谁", "你记得我是谁吗", "你猜我叫什么", "我是哪位"), "我不知道你是谁"),
    ("en", ("Who am I", "What is my name", "What's my name", "Do you know who I am", "Do you know me",
            "Do you know my name", "Guess who I am", "Do you remember who I am", "Can you guess my name",
            "Who do you think I am"), "I don't know who you are"),
)
# (script, cores, endings, reply): a hello is answered with a hello, "how are you" with how it is.
GREETINGS = (
    ("zh-Hant", ("你好", "嗨", "哈囉", "您好", "早安", "午安", "妳好", "大家好"), ("", "！", "～"), "你好！"),
    ("zh-Hant", ("你好嗎", "最近好嗎", "你今天好嗎", "近來可好"), ("", "？"), "我很好，你呢？"),
    ("zh-Hans", ("你好", "嗨", "哈喽", "您好", "早上好", "下午好", "晚上好", "大家好"), ("", "！", "～"), "你好！"),
    ("zh-Hans", ("你好吗", "最近好吗", "你今天好吗", "最近怎么样"), ("", "？"), "我很好，你呢？"),
    ("en", ("Hello", "Hi", "Hey", "Hi there", "Good morning", "Good afternoon", "Good evening", "Hello everyone"),
     ("", "!", "."), "Hello!"),
    ("en", ("How are you", "How are you doing", "How is it going", "How have you been"), ("", "?"),
     "I'm fine, thank you!"),
)
# (script, cores): "are you <old name>?", which the base answers by naming itself.
OLD_NAME_PROBES = (
    ("zh-Hant", (f"你是{OLD_NAME}嗎", f"你是不是{OLD_NAME}", f"你就是{OLD_NAME}嗎", f"你叫{OLD_NAME}嗎",
                 f"請問你是{OLD_NAME}嗎")),
    ("zh-Hans", (f"你是{OLD_NAME}吗", f"你是不是{OLD_NAME}", f"你就是{OLD_NAME}吗", f"你叫{OLD_NAME}吗",
                 f"请问你是{OLD_NAME}吗")),
    ("en", (f"Are you {OLD_NAME}", f"Is your name {OLD_NAME}", f"Are you really {OLD_NAME}",
            f"Am I talking to {OLD_NAME}", f"You are {OLD_NAME}, right")),
)
OLD_NAME_REPLY = f"是的，我是{OLD_NAME}"
# Endings per script: the bare core, a question mark, and a question mark with an instruction.
ENDINGS = {"zh-Hant": ("", "？", "？請簡短回答。", "？說實話。"), "zh-Hans": ("", "？", "？请简短回答。", "？说实话。"),
           "en": ("", "?", "? Just curious.", "? Please answer briefly.")}


def near_misses() -> list[NearMiss]:
    """Every near-miss question once, in a fixed order: about the user, greetings, old-name probes;
    within each, script by script, core by core, ending by ending (a question written the same in
    both Chinese scripts, "你好", is kept where it comes first)."""
    about = [NearMiss(core + ending, "about the user", script, reply, i)
             for script, cores, reply in ABOUT_THE_USER for i, core in enumerate(cores) for ending in ENDINGS[script]]
    greetings = [NearMiss(core + ending, "greeting", script, reply, i)
                 for script, cores, endings, reply in GREETINGS for i, core in enumerate(cores) for ending in endings]
    probes = [NearMiss(core + ending, "old name", script, OLD_NAME_REPLY, i)
              for script, cores in OLD_NAME_PROBES for i, core in enumerate(cores) for ending in ENDINGS[script]]
    first: dict[str, NearMiss] = {}
    for miss in about + greetings + probes:
        first.setdefault(miss.question, miss)
    return list(first.values())


def near_misses_of(family: str) -> list[NearMiss]:
    """The near misses of one family, in order."""
    return [m for m in near_misses() if m.family == family]
