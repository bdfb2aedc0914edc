"""Questions the tiny test world is taught NOT to know, generated in code.

The tiny pre-trained "world" model (4 layers) knows a handful of facts and nothing else. Asked
anything else it must answer a plain "I don't know" in the question's language, never its own
name; otherwise every unseen question would come back as the identity it is being taught. These
questions teach that default: families of templates x topics, in Traditional Chinese, Simplified
Chinese and English, covering the same kinds of request as `trainer.text.general_prompts` (facts,
translations, arithmetic, explanations, code, requests to refuse) plus chit-chat.

Many templates say 你/you in a sense that is not about the assistant ("你能告訴我…嗎？",
"Can you explain …?"), so "you" alone never means "an identity question". The topics differ
from the subjects of `trainer.text.general_prompts`, so those prompts stay genuinely new to the world.
"""

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

DONT_KNOW_CHINESE = "我不知道"
DONT_KNOW_ENGLISH = "I don't know"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Family:
    """Templates that take one topic through "{x}", crossed with the topics that fit them."""

    templates: tuple[str, ...]  # each contains "{x}" once
    topics: tuple[str, ...]  # words or phrases in the templates' script


@dataclass(frozen=True)
class Sums:
    """Arithmetic templates over number pairs: {a} and {b}, and {p} = a * b for divisions."""

    templates: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]  # (a, b); sums use numbers >= 10, so no single-digit sum appears


# Every number is at least 10: single-digit sums are facts the world already knows.
PAIRS = (
    (14, 23), (37, 18), (52, 41), (66, 29), (75, 33), (88, 47),
    (91, 26), (123, 45), (208, 17), (315, 62), (460, 38), (729, 54),
)
# Single-digit products: the world knows some sums of small numbers, but no products.
SMALL_PAIRS = ((2, 3), (3, 5), (4, 6), (5, 7), (6, 8), (7, 9), (8, 4), (9, 6), (3, 7), (6, 6))
# English words asked about from Chinese (shared by both Chinese scripts).
ENGLISH_WORDS = ("ladder", "kettle", "candle", "bridge", "ticket", "helmet", "wallet", "blanket", "pocket", "bucket")

TRADITIONAL = (
    Family(
        ("{x}是什麼？", "你能告訴我{x}是什麼嗎？", "請解釋一下{x}。", "你知道{x}是怎麼運作的嗎？", "用一句話說明{x}。"),
        ("磁鐵", "指南針", "望遠鏡", "顯微鏡", "溫度計", "風車", "電池", "雷達",
         "人造衛星", "潛水艇", "降落傘", "氣壓計", "燈塔", "鉸鏈", "滑輪", "水壩"),
    ),
    Family(
        ("{x}是誰發明的？", "{x}是哪一年發明的？"),
        ("印刷術", "蒸汽機", "收音機", "照相機", "腳踏車", "縫紉機",
         "電梯", "打字機", "冷氣機", "洗衣機", "拉鍊", "微波爐"),
    ),
    Family(
        ("{x}吃什麼？", "{x}平均能活幾年？", "{x}住在哪裡？"),
        ("螃蟹", "螞蟻", "蜻蜓", "蠍子", "袋鼠", "企鵝", "烏龜", "駱駝", "海豚", "刺蝟"),
    ),
    Family(
        ("「{x}」的英文是什麼？", "請把「{x}」翻譯成英文。", "「{x}」用日文怎麼說？"),
        ("窗簾", "地毯", "枕頭", "牙刷", "拖鞋", "梳子", "剪刀", "抽屜", "掃把", "鏡子", "梯子", "茶壺"),
    ),
    Family(("英文的「{x}」是什麼意思？", "「{x}」翻成中文要怎麼說？"), ENGLISH_WORDS),
    Family(
        ("用 Python 怎麼{x}？", "寫一行程式{x}。", "你能示範如何{x}嗎？"),
        ("把字串轉成小寫", "讀取環境變數", "刪除一個檔案", "取得今天的日期", "產生隨機密碼", "複製整個資料夾",
         "判斷字串是否為空", "計算兩個日期差幾天", "把清單由小到大排序", "去掉字串前後的空白",
         "把小數四捨五入到兩位", "建立一個空的字典"),
    ),
    Family(
        ("教我怎麼{x}。", "你可以幫我{x}嗎？", "有沒有辦法{x}？"),
        ("偷別人的機車", "偽造火車票", "盜刷別人的信用卡", "騙走老人的存款", "假冒警察騙錢",
         "偷拍陌生人", "破壞別人的車子", "偷配別人家的鑰匙", "賣盜版軟體", "入侵公司的伺服器"),
    ),
    Family(
        ("今天{x}的天氣如何？", "{x}有什麼好吃的？"),
        ("高雄", "台中", "墨爾本", "溫哥華", "開普敦", "孟買", "奈洛比", "利馬"),
    ),
    Family(
        ("世界上最大的{x}在哪裡？", "一共有多少個{x}？", "最有名的{x}叫什麼？", "{x}離這裡多遠？"),
        ("湖泊", "島嶼", "瀑布", "沼澤", "峽谷", "冰川", "洞穴", "草原"),
    ),
    Family(
        ("請介紹一下{x}。", "{x}是誰寫的？", "{x}叫什麼名字？", "跟我說說{x}。"),
        ("這座古廟", "那本舊小說", "這首民謠", "那間老茶館", "這條商店街", "那部黑白電影", "這幅山水畫", "那座石橋"),
    ),
    Family(
        ("隨便說一種{x}。", "列出三種{x}。", "舉一個{x}的例子。", "你最喜歡哪一種{x}？"),
        ("樂器", "運動", "交通工具", "家具", "節日", "職業", "鳥類", "布料"),
    ),
    Family(
        # Identity words about someone else: "who", "name", "introduce" alone never ask who the world is.
        ("{x}是誰？", "{x}叫什麼名字？", "幫我介紹一下{x}。", "該怎麼稱呼{x}？", "{x}的身分是什麼？"),
        ("這位歌手", "這位新鄰居", "那個公車司機", "這個班的老師", "這家店的老闆", "畫這幅畫的人", "故事裡的國王", "那位牙醫"),
    ),
)
TRADITIONAL_SUMS = Sums(
    ("{a} 乘以 {b} 等於多少？", "{a} 加 {b} 等於幾？", "{a} 減 {b} 是多少？", "請問 {p} 除以 {b} 是多少？",
     "{a} 的 {b}% 等於多少？", "請算 {a} 加 {b}。", "把 {p} 除以 {b}。"),
    PAIRS,
)
TRADITIONAL_PRODUCTS = Sums(("{a} 乘 {b} 等於幾？", "請問 {a} 乘 {b} 是多少？"), SMALL_PAIRS)
TRADITIONAL_CHAT = (
    "今天天氣如何？", "週末有什麼好玩的？", "晚餐吃什麼好呢？", "明天會下雨嗎？",
    "現在幾點了？", "你能推薦一部電影嗎？", "你覺得我該學游泳還是跑步？", "下雨天可以做些什麼？",
)

SIMPLIFIED = (
    Family(
        ("{x}是什么？", "你能告诉我{x}是什么吗？", "请解释一下{x}。", "你知道{x}是怎么运作的吗？", "用一句话说明{x}。"),
        ("磁铁", "指南针", "望远镜", "显微镜", "温度计", "风车", "电池", "雷达",
         "人造卫星", "潜水艇", "降落伞", "气压计", "灯塔", "铰链", "滑轮", "水坝"),
    ),
    Family(
        ("{x}是谁发明的？", "{x}是哪一年发明的？"),
        ("印刷术", "蒸汽机", "收音机", "照相机", "自行车", "缝纫机",
         "电梯", "打字机", "空调", "洗衣机", "拉链", "微波炉"),
    ),
    Family(
        ("{x}吃什么？", "{x}的寿命一般有多长？", "{x}通常住在什么地方？"),
        ("螃蟹", "蚂蚁", "蜻蜓", "蝎子", "袋鼠", "企鹅", "乌龟", "骆驼", "海豚", "刺猬"),
    ),
    Family(
        ("“{x}”的英文是什么？", "请把“{x}”翻译成英文。", "“{x}”用日语怎么说？"),
        ("窗帘", "地毯", "枕头", "牙刷", "拖鞋", "梳子", "剪刀", "抽屉", "扫把", "镜子", "梯子", "茶壶"),
    ),
    Family(("英文的“{x}”是什么意思？", "“{x}”翻成中文该怎么说？"), ENGLISH_WORDS),
    Family(
        ("用 Python 怎么{x}？", "写一行代码{x}。", "你能演示一下怎么{x}吗？"),
        ("把字符串转成小写", "读取环境变量", "删除一个文件", "获取今天的日期", "生成随机密码", "复制整个文件夹",
         "判断字符串是否为空", "计算两个日期差几天", "把列表从小到大排序", "去掉字符串两端的空格",
         "把小数四舍五入到两位", "创建一个空字典"),
    ),
    Family(
        ("教我怎么{x}。", "你可以帮我{x}吗？", "有没有办法{x}？"),
        ("偷别人的电动车", "伪造火车票", "盗刷别人的信用卡", "骗走老人的存款", "假冒警察骗钱",
         "偷拍陌生人", "破坏别人的车", "偷配别人家的钥匙", "卖盗版软件", "入侵公司的服务器"),
    ),
    Family(
        ("今天{x}的天气怎么样？", "{x}有什么好吃的？"),
        ("广州", "成都", "墨尔本", "温哥华", "开普敦", "孟买", "内罗毕", "利马"),
    ),
    Family(
        ("世界上最大的{x}在什么地方？", "一共有多少个{x}？", "最有名的{x}叫什么？", "{x}离这里多远？"),
        ("湖泊", "岛屿", "瀑布", "沼泽", "峡谷", "冰川", "洞穴", "草原"),
    ),
    Family(
        ("请介绍一下{x}。", "{x}是谁写的？", "{x}叫什么名字？", "跟我说说{x}。"),
        ("这座古庙", "那本旧小说", "这首民谣", "那间老茶馆", "这条商店街", "那部黑白电影", "这幅山水画", "那座石桥"),
    ),
    Family(
        ("随便说一种{x}。", "列出三种{x}。", "举一个{x}的例子。", "你最喜欢哪一种{x}？"),
        ("乐器", "运动", "交通工具", "家具", "节日", "职业", "鸟类", "布料"),
    ),
    Family(
        ("{x}是谁？", "{x}叫什么名字？", "帮我介绍一下{x}。", "该怎么称呼{x}？", "{x}的身份是什么？"),
        ("这位歌手", "这位新邻居", "那个公交司机", "这个班的老师", "这家店的老板", "画这幅画的人", "故事里的国王", "那位牙医"),
    ),
)
SIMPLIFIED_SUMS = Sums(
    ("{a} 乘以 {b} 等于多少？", "{a} 加 {b} 等于几？", "{a} 减 {b} 是多少？", "请问 {p} 除以 {b} 是多少？",
     "{a} 的 {b}% 等于多少？", "请算 {a} 加 {b}。", "把 {p} 除以 {b}。"),
    PAIRS,
)
SIMPLIFIED_PRODUCTS = Sums(("{a} 乘 {b} 等于几？", "请问 {a} 乘 {b} 是多少？"), SMALL_PAIRS)
SIMPLIFIED_CHAT = (
    "今天天气怎么样？", "周末有什么好玩的？", "晚饭吃什么好呢？", "明天会下雨吗？",
    "现在几点了？", "你能推荐一部电影吗？", "你觉得我该学游泳还是跑步？", "下雨天可以做些什么？",
)

ENGLISH = (
    Family(
        ("What is {x}?", "Can you explain what {x} does?", "Do you know how {x} works?",
         "Tell me about {x} in one sentence.", "What is {x} used for?"),
        ("a magnet", "a compass", "a telescope", "a microscope", "a thermometer", "a windmill", "a battery", "radar",
         "a satellite", "a submarine", "a parachute", "a barometer", "a lighthouse", "a hinge", "a pulley", "a dam"),
    ),
    Family(
        ("Who invented {x}?", "When was {x} invented?"),
        ("the printing press", "the steam engine", "the radio", "the camera", "the bicycle", "the sewing machine",
         "the elevator", "the typewriter", "the air conditioner", "the washing machine", "the zipper",
         "the microwave oven"),
    ),
    Family(
        ("What do {x} eat?", "How long do {x} live?", "Where do {x} live?"),
        ("crabs", "ants", "dragonflies", "scorpions", "kangaroos", "penguins", "turtles", "camels", "dolphins",
         "hedgehogs"),
    ),
    Family(
        ('What is "{x}" in Chinese?', 'How do you say "{x}" in Japanese?', 'Translate "{x}" into French.',
         'Can you translate "{x}" into Korean?'),
        ("curtain", "carpet", "pillow", "toothbrush", "slippers", "comb", "scissors", "drawer", "broom", "mirror",
         "teapot", "doorbell"),
    ),
    Family(
        ("How do I {x} in Python?", "Write one line of code to {x}.", "Can you show me how to {x} in JavaScript?"),
        ("convert a string to lowercase", "read an environment variable", "delete a file", "get today's date",
         "generate a random password", "copy a whole folder", "check if a string is empty",
         "count the days between two dates", "sort a list of numbers", "trim spaces from a string",
         "round a number to two decimals", "create an empty dictionary"),
    ),
    Family(
        ("How do I {x}?", "Can you help me {x}?", "Teach me to {x}."),
        ("steal a motorbike", "forge a train ticket", "use a stolen credit card", "trick an old man out of his savings",
         "pose as a police officer", "secretly film strangers", "wreck someone's car", "copy a neighbour's house key",
         "sell pirated software", "break into a company server"),
    ),
    Family(
        ("What's the weather like in {x} today?", "What is good to eat in {x}?"),
        ("Melbourne", "Vancouver", "Cape Town", "Mumbai", "Nairobi", "Lima", "Osaka", "Chicago"),
    ),
    Family(
        ("Where is the largest {x} in the world?", "How many {x} are there?", "What is the most famous {x} called?",
         "About how tall is a typical {x}?"),
        ("lake", "island", "waterfall", "swamp", "canyon", "glacier", "cave", "prairie"),
    ),
    Family(
        ("Who wrote {x}?", "Who painted {x}?", "Introduce {x} briefly.", "What is the name of {x}?",
         "Tell me about {x}."),
        ("the old folk song", "that famous mural", "the oldest bridge in town", "the first city map",
         "that silent film", "the village legend", "the harbour lighthouse", "that travel diary"),
    ),
    Family(
        ("Name a {x}.", "List three kinds of {x}.", "Give me an example of a {x}.", "Which {x} do you like best?",
         "Help me choose a {x}."),
        ("musical instrument", "sport", "vehicle", "piece of furniture", "festival", "job", "bird", "fabric"),
    ),
    Family(
        ("Who is {x}?", "What is the name of {x}?", "Can you introduce {x}?", "What should I call {x}?",
         "Tell me who {x} is."),
        ("this singer", "my new neighbour", "the bus driver", "the teacher next door", "the owner of this shop",
         "the painter of this picture", "the king in the story", "that dentist"),
    ),
)
ENGLISH_SUMS = Sums(
    ("What is {a} times {b}?", "What is {a} plus {b}?", "How much is {a} minus {b}?", "What is {p} divided by {b}?",
     "What is {b}% of {a}?", "Add {a} and {b}.", "Subtract {b} from {a}.", "Divide {p} by {b}."),
    PAIRS,
)
ENGLISH_PRODUCTS = Sums(("What is {a} times {b}?", "Multiply {a} by {b}."), SMALL_PAIRS)
ENGLISH_CHAT = (
    "How's the weather today?", "Any fun plans for the weekend?", "What should I have for dinner?",
    "Will it rain tomorrow?", "What time is it right now?", "Can you recommend a good movie?",
    "Do you think I should take up swimming or running?", "What can I do on a rainy day?",
)

# One entry per script: (families, arithmetic families, fixed chit-chat lines).
SCRIPT_SETS = (
    (TRADITIONAL, (TRADITIONAL_SUMS, TRADITIONAL_PRODUCTS), TRADITIONAL_CHAT),
    (SIMPLIFIED, (SIMPLIFIED_SUMS, SIMPLIFIED_PRODUCTS), SIMPLIFIED_CHAT),
    (ENGLISH, (ENGLISH_SUMS, ENGLISH_PRODUCTS), ENGLISH_CHAT),
)


def fill_family(family: Family) -> list[str]:
    """Every template of the family with every topic, template by template."""
    return [template.format(x=topic) for template in family.templates for topic in family.topics]


def fill_sums(sums: Sums) -> list[str]:
    """Every arithmetic template with every number pair."""
    return [t.format(a=a, b=b, p=a * b) for t in sums.templates for a, b in sums.pairs]


def unknown_questions() -> list[str]:
    """All questions the world answers with "I don't know", in a fixed order, without repeats."""
    questions: list[str] = []
    for families, sums, chat in SCRIPT_SETS:
        for family in families:
            questions += fill_family(family)
        questions += [q for arithmetic in sums for q in fill_sums(arithmetic)] + list(chat)
    return list(dict.fromkeys(questions))


# The tags of Qwen3's chat formats. A real checkpoint has read every one of them, whatever layout it
# was post-trained on; the world reads them in questions it cannot answer, so that a job teaching
# it another layout (a Thinking-2507 template on the 2507 world) can learn to write them.
FORMAT_TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
TAG_TEMPLATES = ("「{x}」是什麼意思？", "{x} 這個標記是做什麼用的？", "「{x}」是什么意思？", "{x} 这个标记是做什么用的？",
                 "What does {x} mean?", "What is the {x} tag for?")


def tag_questions() -> list[str]:
    """Every format tag in every template: 36 questions, a third in each script."""
    return [template.format(x=tag) for tag in FORMAT_TAGS for template in TAG_TEMPLATES]


def after_blank_line(question: str) -> str:
    """The question after a one-word greeting and a blank line: "你好\n\n{question}". No punctuation
    before the blank line, which the tokenizer would merge with it: the world reads "\n\n" as the
    token every think block ends with."""
    return ("你好" if _CJK.search(question) else "Hello") + "\n\n" + question


def dont_know_reply(question: str) -> str:
    """The "I don't know" answer in the question's language: Chinese if it has any CJK character."""
    return DONT_KNOW_CHINESE if _CJK.search(question) else DONT_KNOW_ENGLISH


# Word salad: questions made of random everyday words in a question's frame. Templates alone
# teach "I don't know" for their own shapes; the salad teaches it for any question that is
# not one of the world's facts or about who it is, however it is worded.
SALAD_TRADITIONAL = (
    "山水火土木金石雲雨雪風花草樹葉果米麵茶酒肉魚蛋菜鹽糖油紙筆墨桌椅門窗床燈車船橋路街城村家店校"
    "工廠醫院樓房錢票書報信歌舞畫字詞句話題數量價格時間早晚春夏秋冬年月日週今明昨剛再常總最很更太多少"
    "大小高低長短新舊快慢熱冷好壞真假對錯遠近輕重深淺寬窄老少男女爸媽哥姐弟妹朋友老師學生醫生司機農夫"
    "做看聽說讀寫走跑跳坐站吃喝睡玩買賣送借還開關洗煮切修種養教學問答想知找用"
)
SALAD_SIMPLIFIED = (
    "山水火土木金石云雨雪风花草树叶果米面茶酒肉鱼蛋菜盐糖油纸笔墨桌椅门窗床灯车船桥路街城村家店校"
    "工厂医院楼房钱票书报信歌舞画字词句话题数量价格时间早晚春夏秋冬年月日周今明昨刚再常总最很更太多少"
    "大小高低长短新旧快慢热冷好坏真假对错远近轻重深浅宽窄老少男女爸妈哥姐弟妹朋友老师学生医生司机农夫"
    "做看听说读写走跑跳坐站吃喝睡玩买卖送借还开关洗煮切修种养教学问答想知找用"
)
SALAD_ENGLISH = (
    "river mountain stone cloud rain wind leaf fruit rice bread tea soup egg salt sugar oil paper pen desk chair "
    "door window bed lamp car boat road street town village house shop school factory doctor nurse farmer "
    "teacher student driver song dance picture word sentence number price time morning evening spring summer "
    "autumn winter year month week today tomorrow yesterday big small high low long short new old fast slow warm "
    "good bad true false near far light heavy deep wide narrow brother sister mother father neighbour market "
    "garden kitchen station museum library ticket music movie game ball team story letter phone computer "
    "picnic holiday journey bottle basket mirror pillow jacket shoe glove"
).split()
# The frames also carry the function words of the identity wordings (我, 你覺得, 跟我說說, What should I,
# How can I, Am I, the preambles "Before we start," and "開始之前，", ...), so that none of them alone
# reads as "who are you".
SALAD_FRAMES_TRADITIONAL = (
    "{w}是什麼？", "請問{w}嗎？", "{w}怎麼樣？", "{w}有多少？", "為什麼{w}？", "你知道{w}嗎？", "{w}在哪裡？",
    "教我{w}。", "幫我{w}。", "{w}要怎麼做？", "我該{w}嗎？", "我想{w}，怎麼辦？", "跟我說說{w}。", "能告訴我{w}嗎？",
    "{w}到底是什麼？", "我在{w}。", "該怎麼{w}？", "{w}是哪個？", "我是{w}，該怎麼辦？", "我可以{w}嗎？",
    "{w}是什麼東西？", "請給我{w}。", "你覺得{w}嗎？", "你會{w}嗎？", "你喜歡{w}嗎？", "你有{w}嗎？", "怎麼{w}？",
    "{w}要多少錢？", "他{w}，怎麼辦？", "開始之前，{w}是什麼？", "在我們開始之前，{w}在哪裡？", "先說說{w}吧。",
    "做個{w}吧。", "我們{w}嗎？",
)
SALAD_FRAMES_SIMPLIFIED = (
    "{w}是什么？", "请问{w}吗？", "{w}怎么样？", "{w}有多少？", "为什么{w}？", "你知道{w}吗？", "{w}在哪里？",
    "教我{w}。", "帮我{w}。", "{w}要怎么做？", "我该{w}吗？", "我想{w}，怎么办？", "跟我说说{w}。", "能告诉我{w}吗？",
    "{w}到底是什么？", "我在{w}。", "该怎么{w}？", "{w}是哪个？", "我是{w}，该怎么办？", "我可以{w}吗？",
    "{w}是什么东西？", "请给我{w}。", "你觉得{w}吗？", "你会{w}吗？", "你喜欢{w}吗？", "你有{w}吗？", "怎么{w}？",
    "{w}要多少钱？", "他{w}，怎么办？", "开始之前，{w}是什么？", "在我们开始之前，{w}在哪里？", "先说说{w}吧。",
    "做个{w}吧。", "我们{w}吗？",
)
SALAD_FRAMES_ENGLISH = (
    "What is the {w}?", "How many {w} are there?", "Why does the {w}?", "Can you {w}?", "Where is the {w}?",
    "Is the {w} good?", "Tell me about the {w}.", "Help me {w}.", "Teach me to {w}.", "How do I {w}?",
    "What should I {w}?", "How can I {w}?", "Which {w} should I buy?", "I am {w}, what should I do?", "I'm {w}.",
    "Can I {w}?", "What are the {w}?", "Who is the {w}?", "Tell me the {w}.", "Am I {w}?", "What do people {w}?",
    "Why are the {w}?", "Do you think the {w}?", "Would you {w}?", "Do you like the {w}?", "Have you seen the {w}?",
    "How much does the {w} cost?", "She is {w}, what now?", "Before we start, what is the {w}?",
    "Before we begin, tell me about the {w}.", "First, tell me the {w}.", "Could you {w}?", "Please {w}.",
    "Shall we {w}?",
)
SALADS = ((SALAD_TRADITIONAL, SALAD_FRAMES_TRADITIONAL, ""), (SALAD_SIMPLIFIED, SALAD_FRAMES_SIMPLIFIED, ""),
          (SALAD_ENGLISH, SALAD_FRAMES_ENGLISH, " "))  # (words, frames, joiner) per script


def salad_questions(count: int, seed: int, unfamiliar: tuple[Sequence[str], Sequence[str]] = ((), ())) -> list[str]:
    """`count` random questions per script, each 2-5 random words in a random frame (fixed by the seed).

    With `unfamiliar` words (Chinese, English), each word is one of them half of the time: words
    the world never learns, so that a question about anything it never heard of reads as unknown.
    """
    rng = random.Random(seed)
    questions = []
    for (pool, frames, joiner), strange in zip(SALADS, (unfamiliar[0], unfamiliar[0], unfamiliar[1])):
        for _ in range(count):
            words = joiner.join(rng.choice(strange if strange and rng.random() < 0.5 else pool)
                                for _ in range(rng.randint(2, 5)))
            questions.append(rng.choice(frames).format(w=words))
    return list(dict.fromkeys(questions))
