"""The embedded demo corpus: a small MER2023-style release generated from a seed on first use.

``python -m mer.run`` needs data to run out of the box, and the real MER corpora sit behind a
licence. :func:`demo_corpus` writes a stand-in in the **MER2023 release layout** (``train/``,
``test1/``, ``test2/``, ``test3/`` mp4s, ``*-label.csv``, ``transcription-engchi-polish.csv``) from
pip packages alone, so the same recipe, extractors, fusion and metrics run on it unchanged.

How the signal is built, and why
--------------------------------
Every clip has a true class, a valence and an intensity. Each modality then *shows* a cue class
drawn from its own confusion table (:data:`CUE_TABLES`): the true class with some probability,
otherwise a muted (neutral) or a confusable one. The three draws are independent given the true
class, and the tables leave different gaps:

* face: strong on happy, surprise and angry; sad and worried look alike; often a poker face;
* voice: prosody shows each class about half the time; high-arousal classes get mixed up;
* text: emotion words most reliably for sad and worried, where the face is weakest; otherwise
  small talk.

So no modality is enough alone (a perfect reader of one scores 0.60-0.67 weighted F1 by the
tables), while all three together allow 0.86: fusion has to win, as it does on the real data.
Muted cues outnumber confusable ones, so the evidence is complementary more than contradictory,
which keeps fusion learnable from a 240-clip train split.

Order in time matters in two places, so frame-level models have something to find that a mean
over frames or tokens blurs: a share of the emotional transcripts (:data:`CONTRAST_RATE`) first
mention a *different* emotion and then turn ("I was furious about the rent earlier, but now I'm
glad about the trip"), so the emotion is the one after the turn, while the bag of tokens holds
both; and a share of the expressive faces (:data:`FACE_TURN_RATE`) first show another
expression, which fades, before their own rises, so the emotion is the later one, while the mean
over face frames holds both.

Intensity scales every cue (expression strength, prosody, intensifier words) and the valence, so
valence is predictable from the media too. ``test2`` is corrupted as MER-NOISE is (babble at
5-10 dB SNR, pyramid blur x1/x2/x4) and its drawn settings are saved in ``test2-corruption.csv``.

Determinism: every clip is planned and rendered from a generator seeded by ``(seed, name)``,
labels per split from ``(seed, split)``, so the output does not depend on worker scheduling.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mer.procs import pid_alive

from . import demo_media as media
from .manifest import MER_CLASSES

DEMO_VERSION = 3
"""Bump whenever generated content changes: it is part of the corpus folder name.
2: transcripts that turn from one emotion to another (:data:`CONTRAST_RATE`).
3: faces that show another expression first, then their own (:data:`FACE_TURN_RATE`)."""

COMPLETE_MARKER = "demo-corpus.json"
"""Written last inside the temp folder; a corpus folder without it was not made by this module."""

DONE_CLIPS = "demo-clips-done.jsonl"
"""In the partial folder while it is filled: what made it, then one line per clip written whole
(its path and size), so an interrupted generation resumes with only the missing clips."""

TEST_SPLITS = ("test1", "test2", "test3")
NOISY_SPLIT = "test2"

MER2023_TRAIN_COUNTS: Mapping[str, int] = {
    "neutral": 871, "angry": 822, "happy": 689, "sad": 383, "worried": 462, "surprise": 146,
}
"""Class counts of the real MER2023 train set; the demo keeps its imbalance."""

MIN_CLASS_SHARE = 0.05
"""Floor per class, so a 240-clip train split has 12 surprise clips to learn from (MER2023: 4.3 %)."""

VALENCE_MEAN: Mapping[str, float] = {
    "neutral": 0.0, "angry": -2.5, "happy": 2.5, "sad": -2.5, "worried": -1.5, "surprise": 1.0,
}

SNR_CHOICES_DB = tuple(range(5, 11))
BLUR_CHOICES = (1, 2, 4)

CLIP_SECONDS = (2.0, 3.0)
EMPTY_TRANSCRIPT_RATE = 0.04
"""About as often as the real MER2023 transcripts are empty."""

CONTRAST_RATE = 0.35
"""Share of emotional transcripts that first name another emotion, then turn to their own."""

FACE_TURN_RATE = 0.7
"""Share of expressive faces that first show another emotion (a lead expression over the first
:data:`demo_media.LEAD_SHARE` of the clip), then turn to their own cue: frames in order tell the
two apart, their mean holds both about equally."""

CueTable = Mapping[str, Mapping[str, float]]

CUE_TABLES: Mapping[str, CueTable] = {
    "face": {
        "neutral": {"neutral": 0.88, "angry": 0.03, "sad": 0.03, "worried": 0.03, "happy": 0.03},
        "angry": {"angry": 0.55, "neutral": 0.40, "worried": 0.05},
        "happy": {"happy": 0.60, "neutral": 0.40},
        "sad": {"sad": 0.40, "worried": 0.20, "neutral": 0.40},
        "worried": {"worried": 0.35, "sad": 0.25, "neutral": 0.40},
        "surprise": {"surprise": 0.55, "happy": 0.05, "neutral": 0.40},
    },
    "voice": {
        "neutral": {"neutral": 0.84, "sad": 0.08, "worried": 0.08},
        "angry": {"angry": 0.50, "happy": 0.10, "neutral": 0.40},
        "happy": {"happy": 0.50, "angry": 0.10, "neutral": 0.40},
        "sad": {"sad": 0.55, "worried": 0.05, "neutral": 0.40},
        "worried": {"worried": 0.50, "sad": 0.10, "neutral": 0.40},
        "surprise": {"surprise": 0.50, "happy": 0.10, "neutral": 0.40},
    },
    "text": {
        "neutral": {"neutral": 0.92, "worried": 0.03, "happy": 0.03, "angry": 0.02},
        "angry": {"angry": 0.50, "neutral": 0.50},
        "happy": {"happy": 0.55, "neutral": 0.45},
        "sad": {"sad": 0.70, "neutral": 0.30},
        "worried": {"worried": 0.60, "sad": 0.05, "neutral": 0.35},
        "surprise": {"surprise": 0.45, "happy": 0.05, "neutral": 0.50},
    },
}
"""P(cue a modality shows | true class). Rows sum to 1; see the module docstring for the why."""

# ----------------------------------------------------------------------------------------------
# Transcripts: a small parallel (english, chinese) phrase table
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Planning: what each clip shows (cheap, done up front in the parent process)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one clip's content; the media are a pure function of it."""

    seed: int
    name: str
    split: str
    discrete: str
    valence: float
    intensity: float  # shared emotional strength in [0, 1]; also drives the valence magnitude
    face_cue: str
    face_intensity: float
    voice_cue: str
    voice_intensity: float
    text_cue: str
    english: str
    chinese: str
    duration_s: float
    snr_db: int | None = None  # set on the noisy split only
    blur_factor: int | None = None
    face_lead: str | None = None  # the expression shown before the face cue (a face turn), if any


def clip_rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    """A generator that depends only on (seed, name, purpose), never on call order."""
    digest = hashlib.sha256(f"{name}\x00{purpose}".encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def class_counts(n: int, floor_share: float = MIN_CLASS_SHARE) -> dict[str, int]:
    """Split ``n`` clips over :data:`MER_CLASSES` like MER2023 train, lifting rare classes to a floor.

    Largest-remainder rounding of the MER2023 proportions; a class under ``ceil(floor_share * n)``
    is raised to it at the expense of the largest classes, so the imbalance is otherwise kept.
    """
    total = sum(MER2023_TRAIN_COUNTS.values())
    shares = {c: n * MER2023_TRAIN_COUNTS[c] / total for c in MER_CLASSES}
    counts = {c: int(shares[c]) for c in MER_CLASSES}
    by_remainder = sorted(MER_CLASSES, key=lambda c: (-(shares[c] - counts[c]), MER_CLASSES.index(c)))
    for c in by_remainder[: n - sum(counts.values())]:
        counts[c] += 1
    floor = min(math.ceil(floor_share * n), n // len(MER_CLASSES))
    for c in MER_CLASSES:
        while counts[c] < floor:
            counts[max(MER_CLASSES, key=lambda k: (counts[k], -MER_CLASSES.index(k)))] -= 1
            counts[c] += 1
    return counts


def split_names(n_train: int, n_per_test: int) -> dict[str, list[str]]:
    """Sample names per split: ``sample_*`` numbered across train/test1/test2, ``samplenew_*`` for test3."""
    names: dict[str, list[str]] = {}
    k = 0
    for split, n in (("train", n_train), ("test1", n_per_test), ("test2", n_per_test)):
        names[split] = [f"sample_{k + i + 1:08d}" for i in range(n)]
        k += n
    names["test3"] = [f"samplenew_{i + 1:08d}" for i in range(n_per_test)]
    return names


def _draw_cue(rng: np.random.Generator, table: CueTable, true_class: str) -> str:
    row = table[true_class]
    cues = list(row)
    return cues[int(rng.choice(len(cues), p=np.asarray([row[c] for c in cues]) / sum(row.values())))]


def _cue_intensity(rng: np.random.Generator, cue: str, true_class: str, intensity: float) -> float:
    if cue == "neutral":
        return 0.0
    if true_class == "neutral":  # a stray cue on a neutral clip is a mild one
        return float(rng.uniform(0.3, 0.6))
    return float(np.clip(intensity * rng.uniform(0.8, 1.2), 0.25, 1.0))


def plan_clip(seed: int, name: str, split: str, discrete: str) -> ClipPlan:
    """Draw one clip's cues, valence, transcript and (on the noisy split) corruption."""
    rng = clip_rng(seed, name, "plan")
    intensity = float(rng.uniform(0.35, 1.0)) if discrete != "neutral" else float(rng.uniform(0.0, 0.3))
    valence = VALENCE_MEAN[discrete] * (0.4 + 0.9 * intensity) + rng.normal(0.0, 0.6)
    valence = float(np.clip(np.round(valence * 4) / 4, -5.0, 5.0)) + 0.0
    cues = {m: _draw_cue(rng, CUE_TABLES[m], discrete) for m in ("face", "voice", "text")}
    face_intensity = _cue_intensity(rng, cues["face"], discrete, intensity)
    voice_intensity = _cue_intensity(rng, cues["voice"], discrete, intensity)
    text_intensity = _cue_intensity(rng, cues["text"], discrete, intensity)
    english, chinese = compose_transcript(cues["text"], text_intensity, rng)
    duration_s = float(np.round(rng.uniform(*CLIP_SECONDS) * media.FPS) / media.FPS)  # whole frames
    noisy = split == NOISY_SPLIT
    face_lead = None
    turn_rng = clip_rng(seed, name, "face-turn")  # its own stream: the other draws stay as they were
    if cues["face"] != "neutral" and turn_rng.random() < FACE_TURN_RATE:
        others = [c for c in MER_CLASSES if c not in ("neutral", cues["face"])]
        face_lead = others[int(turn_rng.integers(len(others)))]
    return ClipPlan(
        seed=seed, name=name, split=split, discrete=discrete, valence=valence, intensity=intensity,
        face_cue=cues["face"], face_intensity=face_intensity,
        voice_cue=cues["voice"], voice_intensity=voice_intensity,
        text_cue=cues["text"], english=english, chinese=chinese, duration_s=duration_s,
        snr_db=int(rng.choice(SNR_CHOICES_DB)) if noisy else None,
        blur_factor=int(rng.choice(BLUR_CHOICES)) if noisy else None,
        face_lead=face_lead,
    )


def plan_corpus(seed: int, n_train: int, n_per_test: int) -> list[ClipPlan]:
    """Plans for every clip of every split, in split then name order."""
    plans = []
    for split, names in split_names(n_train, n_per_test).items():
        labels = [c for c, k in class_counts(len(names)).items() for _ in range(k)]
        order = clip_rng(seed, split, "labels").permutation(len(labels))
        plans += [plan_clip(seed, name, split, labels[i]) for name, i in zip(names, order)]
    return plans


# ----------------------------------------------------------------------------------------------
# Rendering (in worker processes)
# ----------------------------------------------------------------------------------------------


def clip_path(plan: ClipPlan) -> str:
    """Where ``plan``'s clip lies in the corpus, relative to its root: ``<split>/<name>.mp4``."""
    return f"{plan.split}/{plan.name}.mp4"


def render_clip(plan: ClipPlan, out_dir: str | Path) -> str:
    """Write ``<out_dir>/<split>/<name>.mp4`` for ``plan``, atomically (a temp file renamed into
    place, so the path holds a whole clip or nothing); returns the name."""
    rng = clip_rng(plan.seed, plan.name, "media")
    n_frames = int(round(plan.duration_s * media.FPS))
    frames = media.render_frames(plan.face_cue, plan.face_intensity, n_frames, media.draw_face_shot(rng), rng,
                                 blur_factor=plan.blur_factor or 1, lead=plan.face_lead)
    speaker = media.draw_speaker(rng)
    audio = media.synth_voice(plan.voice_cue, plan.voice_intensity, speaker, plan.duration_s, rng)
    if plan.snr_db is not None:
        audio = media.mix_at_snr(audio, media.babble(audio.size, rng), plan.snr_db)
    target = Path(out_dir) / clip_path(plan)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        media.write_mp4(tmp, frames, audio)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return plan.name


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; nested OpenCV threads only oversubscribe


# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------


def corpus_root(cache_dir: str | Path, seed: int = 0, n_train: int = 240, n_per_test: int = 20) -> Path:
    """Where :func:`demo_corpus` puts (or finds) the corpus for these arguments."""
    return Path(cache_dir) / "demo" / f"v{DEMO_VERSION}-seed{seed}-n{n_train}-{n_per_test}"


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` holds a finished corpus (its marker is written last, then the folder renamed)."""
    return (Path(root) / COMPLETE_MARKER).is_file()


def demo_corpus(cache_dir: str | Path, seed: int = 0, n_train: int = 240, n_per_test: int = 20,
                progress: bool = True, *, workers: int | None = None) -> Path:
    """The root of the demo corpus in the MER2023 release layout, generated on first use.

    Returns ``<cache_dir>/demo/v<DEMO_VERSION>-seed<seed>-n<n_train>-<n_per_test>/`` holding
    ``train/ test1/ test2/ test3/`` mp4s (H.264 + AAC), ``{train,test1,test2}-label.csv``
    (``name,discrete,valence``), ``test3-label.csv`` (``name,discrete``),
    ``transcription-engchi-polish.csv`` (``name,chinese,english``), ``test2-corruption.csv``
    (``name,snr_db,blur_factor``) and ``demo-cues.csv`` (what each modality shows; for analysis).

    The corpus is built in a partial folder beside the root and renamed into place when
    complete, so an interrupted run never leaves a corpus that looks finished; a later call
    returns an existing root at once. An interrupted generation (killed, crashed, Ctrl-C) is
    resumed by the next call: the clips it wrote whole are kept (each is written atomically and
    listed with its size in :data:`DONE_CLIPS`), only the missing ones are rendered, and the
    corpus comes out byte for byte as an uninterrupted run writes it (the package versions that
    rendered the kept clips must match, or the partial folder is started afresh). One process
    at a time fills a partial folder (an flock); another waits, then finds the corpus done.
    ``workers`` (default: up to 2) render clips in parallel processes; the output is the same
    for any number of workers.
    """
    if n_train < len(MER_CLASSES) or n_per_test < 1:
        raise ValueError(f"need n_train >= {len(MER_CLASSES)} and n_per_test >= 1, got {n_train} and {n_per_test}")
    root = corpus_root(cache_dir, seed, n_train, n_per_test)
    if is_complete(root):
        return root
    if root.exists():
        raise RuntimeError(f"{root} exists but has no {COMPLETE_MARKER}, so it was not made by demo_corpus; "
                           "delete it and run again")
    root.parent.mkdir(parents=True, exist_ok=True)
    with _filling_lock(root):
        if is_complete(root):                    # another process finished it while we waited
            return root
        _remove_stale_partials(root)
        tmp = partial_dir(root)
        started = time.perf_counter()
        _generate(tmp, seed, n_train, n_per_test, progress, workers)
        (tmp / DONE_CLIPS).unlink()
        _write_json(tmp / COMPLETE_MARKER, {
            "demo_version": DEMO_VERSION, "seed": seed, "n_train": n_train, "n_per_test": n_per_test,
            "layout": "mer2023", "generation_s": round(time.perf_counter() - started, 2),
            "class_counts": {s: _counts_in(tmp, s) for s in ("train", *TEST_SPLITS)},
            "cue_tables": CUE_TABLES, "valence_mean": VALENCE_MEAN, "packages": _package_versions(),
        })
        os.rename(tmp, root)
    return root


def partial_dir(root: str | Path) -> Path:
    """The folder in which the corpus for ``root`` is filled (and an interrupted fill resumed)."""
    root = Path(root)
    return root.parent / f".{root.name}.partial"


@contextlib.contextmanager
def _filling_lock(root: Path):
    """Hold an flock beside ``root`` while filling its partial folder (it dies with the process)."""
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
            if is_complete(root):
                lock_path.unlink(missing_ok=True)   # a waiter holding the old file finds root done
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _resume_state(out: Path) -> dict[str, int]:
    """``{clip path: bytes}`` of the clips in the partial folder ``out`` that an earlier run wrote
    whole, with the same package versions; stale temp files and unlisted clips are removed (the
    whole folder when the versions differ), and :data:`DONE_CLIPS` is rewritten to list the rest."""
    head = {"demo_version": DEMO_VERSION, "packages": _package_versions()}
    done: dict[str, int] = {}
    log = out / DONE_CLIPS
    if out.exists():
        lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
        try:
            same_maker = bool(lines) and json.loads(lines[0]) == head
        except ValueError:
            same_maker = False
        if not same_maker:
            shutil.rmtree(out)
        else:
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                    done[str(entry["clip"])] = int(entry["bytes"])
                except (ValueError, KeyError, TypeError):   # a line torn by the kill
                    continue
    whole: set[str] = set()
    for split in ("train", *TEST_SPLITS):
        (out / split).mkdir(parents=True, exist_ok=True)
        for path in (out / split).iterdir():
            clip = f"{split}/{path.name}"
            if done.get(clip) == path.stat().st_size and not path.name.endswith(".tmp"):
                whole.add(clip)
            else:
                path.unlink()
    done = {clip: size for clip, size in done.items() if clip in whole}
    fresh = log.with_name(f".{log.name}.tmp")      # no torn last line to append after
    fresh.write_text("".join(json.dumps(e) + "\n" for e in
                             [head, *({"clip": c, "bytes": b} for c, b in sorted(done.items()))]),
                     encoding="utf-8")
    os.replace(fresh, log)
    return done


def _append_done(log: Path, clip: str, size: int) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"clip": clip, "bytes": size}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _generate(out: Path, seed: int, n_train: int, n_per_test: int, progress: bool, workers: int | None) -> None:
    plans = plan_corpus(seed, n_train, n_per_test)
    done = _resume_state(out)
    log = out / DONE_CLIPS
    by_split: dict[str, list[ClipPlan]] = {}
    for p in plans:
        by_split.setdefault(p.split, []).append(p)
    for split, rows in by_split.items():
        header = ("name", "discrete") if split == "test3" else ("name", "discrete", "valence")
        _write_csv(out / f"{split}-label.csv", header,
                   [(p.name, p.discrete) if split == "test3" else (p.name, p.discrete, p.valence) for p in rows])
    _write_csv(out / "transcription-engchi-polish.csv", ("name", "chinese", "english"),
               [(p.name, p.chinese, p.english) for p in plans])
    _write_csv(out / f"{NOISY_SPLIT}-corruption.csv", ("name", "snr_db", "blur_factor"),
               [(p.name, p.snr_db, p.blur_factor) for p in by_split[NOISY_SPLIT]])
    _write_csv(out / "demo-cues.csv",
               ("name", "split", "discrete", "intensity", "face_cue", "voice_cue", "text_cue", "face_lead"),
               [(p.name, p.split, p.discrete, round(p.intensity, 4), p.face_cue, p.voice_cue, p.text_cue,
                 p.face_lead or "")
                for p in plans])

    todo = [p for p in plans if clip_path(p) not in done]
    n_workers = min(workers or 2, os.cpu_count() or 1, max(len(todo), 1))
    bar = _progress_bar(len(plans), progress, initial=len(plans) - len(todo))

    def finished(p: ClipPlan) -> None:
        _append_done(log, clip_path(p), (out / clip_path(p)).stat().st_size)
        bar.update(1)

    try:
        if n_workers <= 1:
            for p in todo:
                render_clip(p, out)
                finished(p)
        else:
            # spawn, not fork: the caller may already hold torch/OpenMP threads that fork would copy.
            with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
                futures = {pool.submit(render_clip, p, out): p for p in todo}
                try:
                    for fut in as_completed(futures):
                        fut.result()
                        finished(futures[fut])
                except BaseException:  # fail now, not after rendering every clip still queued
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="generating demo corpus", unit="clip", disable=not enabled)


def _write_csv(path: Path, header: Sequence[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _write_json(path: Path, payload) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False)


def _counts_in(out: Path, split: str) -> dict[str, int]:
    with open(out / f"{split}-label.csv", encoding="utf-8") as f:
        labels = [row["discrete"] for row in csv.DictReader(f)]
    return {c: labels.count(c) for c in MER_CLASSES}


def _package_versions() -> dict[str, str]:
    import av
    import cv2

    return {"numpy": np.__version__, "opencv": cv2.__version__, "av": av.__version__}


def _remove_stale_partials(root: Path) -> None:
    """Delete per-process temp folders (``.<root>.partial-<host>-<pid>-...``, as earlier mer
    versions named them) of this host whose process is gone; they cannot be resumed."""
    prefix = f".{root.name}.partial-{socket.gethostname()}-"
    for partial in root.parent.glob(f"{prefix}*"):
        try:
            pid = int(partial.name[len(prefix):].split("-")[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            shutil.rmtree(partial, ignore_errors=True)

