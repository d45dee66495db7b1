"""Transcripts: a small parallel (english, chinese) phrase table, and the utterance each clip says."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

EMPTY_TRANSCRIPT_RATE = 0.04
"""About as often as the real MER2023 transcripts are empty."""

CONTRAST_RATE = 0.35
"""Share of emotional transcripts that first name another emotion, then turn to their own."""


_OPENERS: Sequence[tuple[str, str]] = (
    ("", ""), ("", ""), ("", ""), ("Well, ", "嗯，"), ("You know, ", "你知道吗，"), ("Honestly, ", "说实话，"),
    ("Look, ", "你看，"), ("I mean, ", "我是说，"), ("Oh, ", "哦，"), ("Listen, ", "听着，"), ("Hey, ", "嘿，"),
)

_INTENSIFIERS: Sequence[tuple[str, str]] = (("", "很"), ("really ", "真的很"), ("truly ", "非常"))
"""Fills ``{int}`` by the clip's intensity: the words get stronger as the face and voice do."""

# Small talk is composed (subject x time x action, ~3,000 sentences) rather than picked from a
# short list: repeated neutral sentences with random labels would let a text model memorise
# noise, and real transcripts rarely repeat.
_SUBJECTS: Sequence[tuple[str, str]] = (
    ("I", "我"), ("We", "我们"), ("He", "他"), ("She", "她"), ("They", "他们"), ("My brother", "我哥哥"),
    ("Our neighbour", "我们的邻居"), ("The manager", "经理"), ("My mother", "我妈妈"), ("Xiao Li", "小李"),
)
_TIMES: Sequence[tuple[str, str]] = (
    ("", ""), ("yesterday", "昨天"), ("this morning", "今天早上"), ("last week", "上周"), ("on Monday", "周一"),
    ("after lunch", "午饭后"), ("last night", "昨晚"), ("at noon", "中午"), ("two days ago", "两天前"),
    ("this afternoon", "今天下午"),
)
_ACTIONS: Sequence[tuple[str, str]] = (
    ("took the bus to work", "坐公交车去上班"), ("bought some vegetables", "买了些蔬菜"),
    ("moved the meeting to room three", "把会议改到了三号房间"), ("called the landlord", "给房东打了电话"),
    ("sent the address", "发了地址"), ("painted the kitchen", "粉刷了厨房"), ("walked the dog", "遛了狗"),
    ("read two chapters", "读了两章"), ("went to the bank", "去了银行"), ("fixed the printer", "修好了打印机"),
    ("cooked some noodles", "煮了面条"), ("cleaned the car", "洗了车"), ("checked the schedule", "看了日程安排"),
    ("returned the books", "还了书"), ("charged the phone", "给手机充了电"), ("met the new teacher", "见了新老师"),
    ("ordered a taxi", "叫了一辆出租车"), ("put the files in the drawer", "把文件放进了抽屉"),
    ("watered the plants", "给植物浇了水"), ("paid the electricity bill", "交了电费"),
    ("changed the train tickets", "改了火车票"), ("wrote the report", "写了报告"),
    ("visited the doctor", "去看了医生"), ("carried the boxes upstairs", "把箱子搬上了楼"),
    ("locked the door", "锁了门"), ("made some tea", "泡了些茶"), ("opened a new account", "开了一个新账户"),
    ("repaired the window", "修了窗户"), ("picked up the parcel", "取了包裹"), ("printed the forms", "打印了表格"),
)

# Emotion words put in shared frames: the word, not a memorised sentence, carries the cue.
_CUE_WORDS: Mapping[str, Sequence[tuple[str, str]]] = {
    "happy": (("happy", "开心"), ("glad", "高兴"), ("delighted", "愉快"), ("thrilled", "兴奋"), ("pleased", "满意")),
    "angry": (("angry", "生气"), ("furious", "愤怒"), ("annoyed", "恼火"), ("mad", "气愤"), ("irritated", "烦躁")),
    "sad": (("sad", "难过"), ("heartbroken", "心碎"), ("miserable", "痛苦"), ("lonely", "孤独"), ("down", "失落")),
    "worried": (("worried", "担心"), ("nervous", "紧张"), ("anxious", "焦虑"), ("scared", "害怕"), ("uneasy", "不安")),
    "surprise": (("surprised", "惊讶"), ("shocked", "震惊"), ("amazed", "吃惊"), ("stunned", "意外"),
                 ("astonished", "诧异")),
}
_TOPICS: Sequence[tuple[str, str]] = (
    ("the rent", "房租"), ("the trip", "这次旅行"), ("the exam", "考试"), ("what he said", "他说的话"),
    ("the news", "这个消息"), ("my boss", "我老板"), ("the results", "结果"), ("the party", "聚会"),
    ("that phone call", "那通电话"), ("the letter", "那封信"), ("the new job", "新工作"), ("the wedding", "婚礼"),
)
_CUE_FRAMES: Sequence[tuple[str, str]] = (
    ("I'm {int}{word} about {topic}.", "关于{topic}，我{int}{word}。"),
    ("{Topic} made me {int}{word}.", "{topic}让我{int}{word}。"),
    ("I feel {int}{word} right now.", "我现在觉得{int}{word}。"),
    ("I was {int}{word} when I heard about {topic}.", "听说{topic}的时候，我{int}{word}。"),
)

_CUE_LINES: Mapping[str, Sequence[tuple[str, str]]] = {
    "happy": (
        ("This news is {int}wonderful!", "这个消息{int}棒！"),
        ("I'm {int}happy to see you again.", "再见到你我{int}开心。"),
        ("Haha, that was {int}fun!", "哈哈，那{int}好玩！"),
        ("I love it, thank you so much!", "我太喜欢了，谢谢你！"),
        ("We finally did it, I'm {int}proud of us!", "我们终于做到了，我{int}为我们骄傲！"),
        ("Today was {int}lovely.", "今天过得{int}愉快。"),
        ("I got the job, I'm {int}excited!", "我得到那份工作了，我{int}兴奋！"),
        ("You made me laugh so hard.", "你让我笑得好开心。"),
        ("Everything turned out great, I'm {int}glad.", "一切都很顺利，我{int}高兴。"),
    ),
    "angry": (
        ("I'm {int}fed up with this!", "我{int}烦这件事！"),
        ("How dare you say that to me?", "你怎么敢这样跟我说话？"),
        ("Stop lying to me!", "别再对我撒谎了！"),
        ("This is {int}unacceptable!", "这{int}让人无法接受！"),
        ("Get out of my way!", "给我让开！"),
        ("You never listen to me!", "你从来不听我说话！"),
        ("I'm {int}angry with you.", "我对你{int}生气。"),
        ("Don't you dare touch my things again!", "你再敢碰我的东西试试！"),
        ("Who do you think you are?", "你以为你是谁？"),
        ("That was {int}rude of you!", "你那样{int}没礼貌！"),
    ),
    "sad": (
        ("I {int}miss her.", "我{int}想她。"),
        ("Nobody cares about me anymore.", "再也没有人在乎我了。"),
        ("I lost everything.", "我失去了一切。"),
        ("I'm {int}heartbroken.", "我{int}伤心。"),
        ("I feel so alone.", "我觉得好孤独。"),
        ("He's gone and he's never coming back.", "他走了，再也不会回来了。"),
        ("I'm {int}sorry it ended like this.", "事情这样结束，我{int}难过。"),
        ("I cried all night.", "我哭了一整夜。"),
        ("Nothing matters anymore.", "一切都不重要了。"),
    ),
    "worried": (
        ("What if something goes wrong?", "万一出了问题怎么办？"),
        ("I'm {int}worried about him.", "我{int}担心他。"),
        ("I don't know what to do.", "我不知道该怎么办。"),
        ("Will it be all right?", "会没事的吧？"),
        ("I'm afraid we'll be too late.", "我怕我们会来不及。"),
        ("I'm {int}nervous about the results.", "我对结果{int}紧张。"),
        ("She hasn't called back yet, I hope she's okay.", "她还没回电话，希望她没事。"),
        ("I can't stop thinking about the exam.", "我一直在想考试的事。"),
        ("Are you sure it's safe?", "你确定这样安全吗？"),
    ),
    "surprise": (
        ("Really? I had no idea!", "真的吗？我完全不知道！"),
        ("Wow, you're here?", "哇，你怎么来了？"),
        ("What? That's {int}unbelievable!", "什么？这{int}难以置信！"),
        ("No way, seriously?", "不会吧，真的假的？"),
        ("Oh! I didn't expect that at all.", "哦！我完全没想到。"),
        ("You did all this for me?", "这些都是你为我做的？"),
        ("I can't believe it's you!", "真不敢相信是你！"),
        ("Wait, since when?", "等等，什么时候的事？"),
        ("That's {int}surprising!", "这{int}出人意料！"),
    ),
}


def _pick(rng: np.random.Generator, options: Sequence[tuple[str, str]]) -> tuple[str, str]:
    return options[int(rng.integers(len(options)))]


def _after_opener(opener: str, sentence: str) -> str:
    if opener and not (sentence.startswith("I ") or sentence.startswith("I'")):
        return sentence[0].lower() + sentence[1:]
    return sentence


def _small_talk(rng: np.random.Generator) -> tuple[str, str]:
    subj_en, subj_zh = _pick(rng, _SUBJECTS)
    time_en, time_zh = _pick(rng, _TIMES)
    act_en, act_zh = _pick(rng, _ACTIONS)
    return f"{subj_en} {act_en}{' ' + time_en if time_en else ''}.", f"{subj_zh}{time_zh}{act_zh}。"


def _cue_sentence(cue: str, intensity: float, rng: np.random.Generator) -> tuple[str, str]:
    level = min(int(intensity * len(_INTENSIFIERS)), len(_INTENSIFIERS) - 1)
    int_en, int_zh = _INTENSIFIERS[level]
    if rng.random() < 0.5:
        en, zh = _pick(rng, _CUE_LINES[cue])
        return en.replace("{int}", int_en), zh.replace("{int}", int_zh)
    frame_en, frame_zh = _pick(rng, _CUE_FRAMES)
    word_en, word_zh = _pick(rng, _CUE_WORDS[cue])
    topic_en, topic_zh = _pick(rng, _TOPICS)
    en = frame_en.format(int=int_en, word=word_en, topic=topic_en, Topic=topic_en[0].upper() + topic_en[1:])
    zh = frame_zh.format(int=int_zh, word=word_zh, topic=topic_zh)
    return en, zh


def _turn(cue: str, core_en: str, core_zh: str, rng: np.random.Generator) -> tuple[str, str]:
    """``core`` preceded by an earlier, different emotion: what comes after "but now" counts."""
    others = [c for c in _CUE_WORDS if c != cue]
    other = others[int(rng.integers(len(others)))]
    word_en, word_zh = _pick(rng, _CUE_WORDS[other])
    topic_en, topic_zh = _pick(rng, _TOPICS)
    rest = core_en if core_en.startswith(("I ", "I'")) else core_en[0].lower() + core_en[1:]
    return (f"I was {word_en} about {topic_en} earlier, but now {rest}",
            f"之前关于{topic_zh}我很{word_zh}，但现在{core_zh}")


def compose_transcript(cue: str, intensity: float, rng: np.random.Generator) -> tuple[str, str]:
    """An (english, chinese) utterance showing ``cue`` (``neutral`` = small talk, no emotion words)."""
    if rng.random() < EMPTY_TRANSCRIPT_RATE:
        return "", ""
    opener_en, opener_zh = _pick(rng, _OPENERS)
    core_en, core_zh = _small_talk(rng) if cue == "neutral" else _cue_sentence(cue, intensity, rng)
    if cue != "neutral" and rng.random() < CONTRAST_RATE:
        core_en, core_zh = _turn(cue, core_en, core_zh, rng)
    en, zh = opener_en + _after_opener(opener_en, core_en), opener_zh + core_zh
    if rng.random() < 0.35:  # small talk around the cue dilutes it, as in real dialogue
        extra_en, extra_zh = _small_talk(rng)
        if rng.random() < 0.5:
            en, zh = f"{extra_en} {en}", extra_zh + zh
        else:
            en, zh = f"{en} {extra_en}", zh + extra_zh
    return en, zh
