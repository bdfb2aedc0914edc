"""The hand-written general prompts and the generated world unknowns: sizes, scripts, lengths, and
the identity questions and known facts that neither may contain.

The checks for known facts are themselves checked: they must flag every control fact of the world
(trainer.text.facts) and every identity wording of trainer.text.whoami, so a check that matches nothing fails.
"""

import re
from collections import Counter
from itertools import product

from trainer.job.world_unknowns import PAIRS, SCRIPT_SETS, dont_know_reply, unknown_questions
from trainer.text.facts import control_facts
from trainer.text.general_prompts import CATEGORIES, GENERAL_PROMPTS, SCRIPTS, prompts_in
from trainer.text.whoami import identity_prompts

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LATIN_LETTER = re.compile(r"[A-Za-z]")
# Characters written only in one script (pairs: 這/这, 麼/么, ...).
TRADITIONAL_ONLY = set(
    "這麼說請們個來時會為與國學問嗎語寫過還點開關對見電話買賣車門間東發現無氣數幾讓給從應經種鐘萬歲樣產變處"
    "認識讀錯難題顏紅綠藍黃魚鳥樹書貓陽愛義測試碼檔計溫熱機網腦單轉換減筆記詞譯醫該圖館飛壓號員區銀錢動習"
    "頭樂聽謝盜騙偽槍彈鎖郵帳條幫別塊顆總資辦稅蹤證長繞壽於裡"
)
SIMPLIFIED_ONLY = set(
    "这么说请们个来时会为与国学问吗语写过还点开关对见电话买卖车门间东发现无气数让给从应经种钟万岁样产变处"
    "认识读错难题颜红绿蓝黄鱼鸟树书猫阳爱义测试码档计温热机网脑单转换减笔记词译医该图馆飞压号员区银钱动习"
    "头乐听谢盗骗伪枪弹锁邮帐条帮别块颗总资办税踪证长绕寿于"
)

FORBIDDEN_WORDS = ("通義", "通义", "千問", "千问", "qwen", "f#", "之神", "宙斯", "zeus", "god", "神", "microsoft")
IDENTITY_MARKERS = (
    "你是", "你叫", "你的名字", "介紹一下你", "介绍一下你", "自我介紹", "自我介绍", "你自己", "你到底是", "你的身分", "你的身份",
    "稱呼你", "称呼你", "跟誰說話", "跟谁说话", "開發你", "开发你", "創造你", "创造你",
    "who are you", "who you are", "what are you", "your name", "yourself", "call you", "which model",
    "who am i talking to", "who made you", "who created you", "who built you", "who trained you",
)
COUNTRIES = re.compile(
    r"法國|法国|日本|德國|德国|英國|英国|義大利|意大利|中國|中国|韓國|韩国|俄羅斯|俄罗斯|埃及|西班牙|加拿大|希臘|希腊"
    r"|泰國|泰国|葡萄牙|奧地利|奥地利|愛爾蘭|爱尔兰|france|japan|germany|\buk\b|united kingdom|britain|england"
    r"|italy|china|korea|russia|egypt|spain|canada|greece|thailand|portugal|austria|ireland"
)
COLOURED_THINGS = re.compile(r"天空|草|雪|香蕉|煤|血|橙|橘|牛奶|sky|grass|snow|banana|coal|blood|orange|milk")
KNOWN_WORDS = re.compile(
    r"蘋果|苹果|貓|猫|狗|水|書|书|太陽|太阳|月亮|花|魚|鱼|鳥|鸟|樹|树|火|謝謝|谢谢|朋友"
    r"|\b(thank you|friend|moon|water|book|cat|dog|apple|sun|flower|fish|bird|tree|fire)\b"
)
OPPOSED_WORDS = re.compile(r"[大高熱热快多長长]|\b(hot|big|fast|up|day|open)\b")
SINGLE_DIGIT_SUM = re.compile(r"^\D*\d\s*(加上?|減|减|plus|minus|\+|-|and)\s*\d\D*$")


def script_of(text: str) -> str:
    """en without CJK; zh-Hant or zh-Hans by the one-script characters it uses; "mixed" if both, and
    "either" if neither ("把 36 除以 4。" is written alike in both scripts)."""
    if not CJK.search(text):
        return "en"
    traditional, simplified = bool(TRADITIONAL_ONLY & set(text)), bool(SIMPLIFIED_ONLY & set(text))
    return {(True, False): "zh-Hant", (False, True): "zh-Hans", (True, True): "mixed"}.get((traditional, simplified),
                                                                                           "either")


def known_fact_problem(text: str) -> str | None:
    """Why `text` asks something the world already knows, or None."""
    lowered = text.lower()
    checks = (
        ("capital", r"首都|首府|capital", COUNTRIES),
        ("colour", r"顏色|颜色|colou?r", COLOURED_THINGS),
        ("translation", r"英文|英語|英语|中文|翻譯|翻译|translat|in (chinese|english)", KNOWN_WORDS),
        ("opposite", r"反義|反义|相反|opposite", OPPOSED_WORDS),
    )
    for name, topic, subjects in checks:
        if re.search(topic, lowered) and subjects.search(lowered):
            return name
    return "single-digit sum" if SINGLE_DIGIT_SUM.search(lowered) else None


def forbidden_problem(text: str) -> str | None:
    """The forbidden word or identity marker in `text`, or None."""
    lowered = text.lower()
    return next((w for w in FORBIDDEN_WORDS + IDENTITY_MARKERS if w in lowered), None)


def mentions(text: str, topic: str) -> bool:
    """`topic` occurs in `text`; an English topic only as whole words ("ants" is not in "plants")."""
    return bool(re.search(rf"\b{re.escape(topic)}\b", text)) if topic.isascii() else topic in text


def all_texts() -> list[str]:
    return [p.text for p in GENERAL_PROMPTS] + unknown_questions()


def test_twelve_distinct_prompts_for_every_category_and_script():
    counts = Counter((p.category, p.script) for p in GENERAL_PROMPTS)
    assert counts == {pair: 12 for pair in product(CATEGORIES, SCRIPTS)}
    assert len(GENERAL_PROMPTS) == 216 == len({p.text for p in GENERAL_PROMPTS})


def test_prompts_in_filters_and_keeps_order():
    assert prompts_in() == list(GENERAL_PROMPTS)
    code_en = prompts_in("code", "en")
    assert len(code_en) == 12 and all(p.category == "code" and p.script == "en" for p in code_en)
    assert code_en == [p for p in GENERAL_PROMPTS if p in code_en]  # same relative order
    assert len(prompts_in(category="refusal")) == 36 and len(prompts_in(script="zh-Hans")) == 72
    assert prompts_in("fact", "zh-Hant")[0].text == "電話是誰發明的？"


def test_every_prompt_is_written_in_the_script_it_claims():
    wrong = [(p.script, p.text) for p in GENERAL_PROMPTS if script_of(p.text) != p.script]
    assert not wrong
    assert all(p.text.isascii() for p in prompts_in(script="en"))


def test_chinese_texts_are_mainly_chinese():
    chinese = [t for t in all_texts() if CJK.search(t)]
    assert not [t for t in chinese if len(CJK.findall(t)) < len(LATIN_LETTER.findall(t))]


def test_texts_are_short():
    too_long = [t for t in all_texts() if len(t) > (40 if CJK.search(t) else 90)]
    assert not too_long


def test_the_checks_catch_every_known_fact_and_identity_question():
    assert all(known_fact_problem(f.question) or forbidden_problem(f.question) for f in control_facts())
    assert all(forbidden_problem(q) for q in identity_prompts())
    assert SINGLE_DIGIT_SUM.search("2 加 3") and SINGLE_DIGIT_SUM.search("what is 3 plus 4?")
    assert not SINGLE_DIGIT_SUM.search("what is 37 times 12?")


def test_no_forbidden_word_or_question_about_the_assistant():
    assert not [(t, forbidden_problem(t)) for t in all_texts() if forbidden_problem(t)]


def test_no_fact_the_world_already_knows():
    assert not [(t, known_fact_problem(t)) for t in all_texts() if known_fact_problem(t)]


def test_many_distinct_unknown_questions_in_a_fixed_order():
    questions = unknown_questions()
    assert len(questions) == len(set(questions)) >= 900
    assert questions == unknown_questions()


def test_unknown_questions_come_in_three_scripts_in_roughly_equal_thirds():
    scripts = Counter(script_of(q) for q in unknown_questions())
    assert set(scripts) == {*SCRIPTS, "either"} and scripts["either"] == len(PAIRS)  # none mixes the two scripts:
    # only the division written alike in both ("把 {p} 除以 {b}。", once for the two) reads as either
    assert min(scripts[script] for script in SCRIPTS) >= 0.25 * sum(scripts.values())


def test_unknown_questions_use_many_templates_including_a_non_identity_you():
    templates = [t for families, sums, _ in SCRIPT_SETS
                 for t in sum((s.templates for s in sums), ()) + sum((f.templates for f in families), ())]
    assert len(set(templates)) >= 30
    questions = unknown_questions()
    assert sum("你" in q for q in questions) >= 50 and sum(" you" in q.lower() for q in questions) >= 30
    for kind in ("乘以", "除以", "翻譯", "翻译", "Python", "天氣", "天气", " times ", "divided by", "Translate"):
        assert any(kind in q for q in questions), kind


def test_unknown_questions_are_new_to_the_general_prompts():
    general = [p.text for p in GENERAL_PROMPTS]
    assert not set(unknown_questions()) & set(general)
    topics = [topic for families, _, _ in SCRIPT_SETS for f in families for topic in f.topics]
    assert not [topic for topic in topics if any(mentions(text, topic) for text in general)]


def test_dont_know_reply_follows_the_language_of_the_question():
    assert dont_know_reply("今天天氣如何？") == "我不知道"
    assert dont_know_reply("用 Python 怎么读取环境变量？") == "我不知道"
    assert dont_know_reply("What is 14 times 23?") == "I don't know"
    assert dont_know_reply("Translate “hi”, please") == "I don't know"
