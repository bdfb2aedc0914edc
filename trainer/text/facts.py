"""Control facts: short questions with one checkable answer, in families generated from tables.

They play two parts. The tiny world is pre-trained to know every one of them (as the real
model knows its facts). The who-am-i job then uses them as control questions: most are
rehearsed while the identity is taught, a fixed share is held out, and "does the reply still
contain the answer" on the held-out ones measures what training took away.

The answer is what a correct reply must contain (compared case-insensitively), so the same
facts check the tiny world's terse "巴黎" and a real model's "法國的首都是巴黎。".
"""

from dataclasses import dataclass

# country (Traditional, Simplified, English) -> capital (Traditional, Simplified, English)
CAPITALS = (
    (("法國", "法国", "France"), ("巴黎", "巴黎", "Paris")),
    (("日本", "日本", "Japan"), ("東京", "东京", "Tokyo")),
    (("德國", "德国", "Germany"), ("柏林", "柏林", "Berlin")),
    (("英國", "英国", "the United Kingdom"), ("倫敦", "伦敦", "London")),
    (("義大利", "意大利", "Italy"), ("羅馬", "罗马", "Rome")),
    (("中國", "中国", "China"), ("北京", "北京", "Beijing")),
    (("韓國", "韩国", "South Korea"), ("首爾", "首尔", "Seoul")),
    (("俄羅斯", "俄罗斯", "Russia"), ("莫斯科", "莫斯科", "Moscow")),
    (("埃及", "埃及", "Egypt"), ("開羅", "开罗", "Cairo")),
    (("西班牙", "西班牙", "Spain"), ("馬德里", "马德里", "Madrid")),
    (("加拿大", "加拿大", "Canada"), ("渥太華", "渥太华", "Ottawa")),
    (("希臘", "希腊", "Greece"), ("雅典", "雅典", "Athens")),
    (("泰國", "泰国", "Thailand"), ("曼谷", "曼谷", "Bangkok")),
    (("葡萄牙", "葡萄牙", "Portugal"), ("里斯本", "里斯本", "Lisbon")),
    (("奧地利", "奥地利", "Austria"), ("維也納", "维也纳", "Vienna")),
    (("愛爾蘭", "爱尔兰", "Ireland"), ("都柏林", "都柏林", "Dublin")),
)
# thing (Traditional, English) -> colour (Traditional, English)
COLOURS = (
    (("天空", "the sky"), ("藍色", "blue")), (("草", "grass"), ("綠色", "green")),
    (("雪", "snow"), ("白色", "white")), (("香蕉", "a banana"), ("黃色", "yellow")),
    (("煤炭", "coal"), ("黑色", "black")), (("血", "blood"), ("紅色", "red")),
    (("柳橙", "an orange"), ("橙色", "orange")), (("牛奶", "milk"), ("白色", "white")),
)
# Chinese word -> English word, asked both ways
WORDS = (
    ("蘋果", "apple"), ("貓", "cat"), ("狗", "dog"), ("水", "water"), ("書", "book"), ("太陽", "sun"),
    ("月亮", "moon"), ("花", "flower"), ("魚", "fish"), ("鳥", "bird"), ("樹", "tree"), ("火", "fire"),
)
ASKED_IN_ENGLISH = ("thank you", "friend", "moon", "water", "book", "cat", "dog", "apple")
ENGLISH_TO_CHINESE = dict((english, chinese) for chinese, english in WORDS) | {"thank you": "謝謝", "friend": "朋友"}
# (a, b) for "a + b" in Chinese and in English
SUMS_CHINESE = ((2, 3), (4, 4), (7, 2), (5, 5), (1, 6), (6, 2), (3, 3), (8, 1), (2, 7), (9, 0), (4, 5), (3, 6))
SUMS_ENGLISH = ((3, 4), (2, 2), (6, 3), (1, 8), (5, 4), (7, 1), (2, 6), (4, 3), (5, 2), (8, 0), (1, 1), (6, 1))
OPPOSITES_CHINESE = (("大", "小"), ("高", "矮"), ("熱", "冷"), ("快", "慢"), ("多", "少"), ("長", "短"))
OPPOSITES_ENGLISH = (("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("day", "night"),
                     ("open", "closed"))
# The words of the new identity exist in the world before it is taught (as in a real model), and it
# writes " F#" inside a sentence too, as a real model does (a reply that only begins "F#" left the
# tiny world unable to write "#" after "我是 F", and held-out wordings ended "我是 F典").
IDENTITY_WORDS = (
    ("F# 是什麼？", "F# 是一種程式語言", "程式語言"), ("What is F#?", "A programming language", "programming language"),
    ("宙斯是誰？", "希臘之神", "希臘"), ("「神」的英文是什麼？", "god", "god"),
    ("Which functional language did Microsoft make?", "Microsoft made F# for .NET", "F#"),
)
HELD_OUT_EVERY = 4  # every 4th fact of each family is held out of who-am-i training


@dataclass(frozen=True)
class Fact:
    """One control question. `reply` is the tiny world's whole answer; `answer` must appear in any correct reply."""

    question: str
    reply: str
    answer: str
    family: str


def capital_facts() -> list[Fact]:
    facts = []
    for (hant, hans, english), (capital_hant, capital_hans, capital_english) in CAPITALS:
        facts += [Fact(f"{hant}的首都是哪裡？", capital_hant, capital_hant, "capital"),
                  Fact(f"{hans}的首都是哪里？", capital_hans, capital_hans, "capital"),
                  Fact(f"What is the capital of {english}?", capital_english, capital_english, "capital")]
    return facts


def colour_facts() -> list[Fact]:
    facts = []
    for (thing_chinese, thing_english), (colour_chinese, colour_english) in COLOURS:
        facts += [Fact(f"{thing_chinese}是什麼顏色？", colour_chinese, colour_chinese, "colour"),
                  Fact(f"What colour is {thing_english}?", colour_english.capitalize(), colour_english, "colour")]
    return facts


def word_facts() -> list[Fact]:
    to_english = [Fact(f"「{chinese}」的英文是什麼？", english, english, "translation") for chinese, english in WORDS]
    to_chinese = [Fact(f'How do you say "{english}" in Chinese?', ENGLISH_TO_CHINESE[english],
                       ENGLISH_TO_CHINESE[english], "translation") for english in ASKED_IN_ENGLISH]
    return to_english + to_chinese


def sum_facts() -> list[Fact]:
    chinese = [Fact(f"{a} 加 {b} 等於多少？", str(a + b), str(a + b), "sum") for a, b in SUMS_CHINESE]
    english = [Fact(f"What is {a} plus {b}?", str(a + b), str(a + b), "sum") for a, b in SUMS_ENGLISH]
    return chinese + english


def opposite_facts() -> list[Fact]:
    chinese = [Fact(f"「{word}」的反義詞是什麼？", opposite, opposite, "opposite") for word, opposite in OPPOSITES_CHINESE]
    english = [Fact(f'What is the opposite of "{word}"?', opposite, opposite, "opposite")
               for word, opposite in OPPOSITES_ENGLISH]
    return chinese + english


def control_facts() -> list[Fact]:
    """Every fact of the world, family by family, in a fixed order."""
    identity_words = [Fact(question, reply, answer, "identity words") for question, reply, answer in IDENTITY_WORDS]
    return capital_facts() + colour_facts() + word_facts() + sum_facts() + opposite_facts() + identity_words


def split_facts() -> tuple[list[Fact], list[Fact]]:
    """(rehearsed, held out): every HELD_OUT_EVERY-th fact of each family, counted within the family, is held out."""
    facts = control_facts()
    position = {}
    held_out = []
    for fact in facts:
        position[fact.family] = position.get(fact.family, -1) + 1
        held_out.append(position[fact.family] % HELD_OUT_EVERY == HELD_OUT_EVERY - 1)
    return [f for f, out in zip(facts, held_out) if not out], [f for f, out in zip(facts, held_out) if out]


def reply_has_answer(reply: str, fact: Fact) -> bool:
    """Fact retention: the reply contains the expected answer, ignoring case."""
    return fact.answer.lower() in reply.lower()
