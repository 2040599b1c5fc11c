"""The curated material the corpus is built from, as question/answer items.

Two sources, both written for this project:

- ``data/qa/*.jsonl``: parent questions with careful answers, one intent per line:
  ``{"id", "topic", "questions": [several phrasings], "answer"}``. The answers keep the
  flags' and the guard's stance: they never diagnose, never give medicine doses, and suggest
  a pediatrician, psychologist or teacher when a worry lasts.
- the analytics tips library (``services/analytics/data/tips.json``, read as a data file):
  each tip becomes an answer (its body and when to seek help) to parent questions phrased
  from its skill domain, topic and age band.

An item's ``group`` keeps all phrasings of one intent together, so the train/validation split
never puts one phrasing on each side.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_QA_DIR",
    "DEFAULT_TIPS_PATH",
    "DEFAULT_WORDINGS_DIR",
    "CorpusError",
    "QaItem",
    "load_material",
    "load_qa",
    "load_tips",
    "material_files",
]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_QA_DIR = Path(__file__).resolve().parent / "data" / "qa"
# more wordings of the same intents (the demo model's opening turns; see builder.opening_samples)
DEFAULT_WORDINGS_DIR = DEFAULT_QA_DIR.parent / "qa_expanded"
DEFAULT_TIPS_PATH = ROOT / "services" / "analytics" / "data" / "tips.json"


class CorpusError(ValueError):
    """Bad material: the message names the file, the line and the field."""


@dataclass(frozen=True, slots=True)
class QaItem:
    group: str                     # one intent: every phrasing of it lands in the same split
    topic: str
    questions: tuple[str, ...]
    answer: str
    source: str                    # "qa" or "tips"


def material_files(qa_dir: Path = DEFAULT_QA_DIR,
                   tips_path: Path | None = DEFAULT_TIPS_PATH) -> list[Path]:
    """Every file the material is read from, in reading order (the demo cache hashes them)."""
    files = sorted(qa_dir.glob("*.jsonl"))
    return files + ([tips_path] if tips_path is not None else [])


def _text(obj: dict, key: str, where: str, min_len: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value.strip()) < min_len:
        raise CorpusError(f"{where}: {key} must be a text of at least {min_len} characters")
    return " ".join(value.split())


def load_qa(qa_dir: Path = DEFAULT_QA_DIR) -> list[QaItem]:
    items: list[QaItem] = []
    seen: dict[str, str] = {}
    files = sorted(qa_dir.glob("*.jsonl"))
    if not files:
        raise CorpusError(f"{qa_dir}: no *.jsonl question files")
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{where}: each line must be a JSON object")
            group = _text(obj, "id", where, 2)
            if group in seen:
                raise CorpusError(f"{where}: id {group!r} is already used in {seen[group]}")
            seen[group] = where
            qs = obj.get("questions")
            if not isinstance(qs, list) or not qs:
                raise CorpusError(f"{where}: questions must be a non-empty list of texts")
            questions = tuple(_text({"q": q}, "q", f"{where} questions", 10) for q in qs)
            items.append(QaItem(group, _text(obj, "topic", where, 2), questions,
                                _text(obj, "answer", where, 40), "qa"))
    return items


# Parent questions for a tip, by skill domain (or topic for the mood tips). "{age}" is the
# middle of the tip's age band. Two phrasings per tip are chosen by its position.
_DOMAIN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "WORKING_MEMORY": (
        "My {age}-year-old forgets things I have just told her. What could we practise at home?",
        "How can I help my {age}-year-old son remember instructions?",
        "My child's working memory results are low for a {age}-year-old. Any game ideas?",
        "What can I do at home to help a {age}-year-old who keeps forgetting what to do next?",
    ),
    "ATTENTION": (
        "My {age}-year-old gets distracted after a few minutes. How can we practise focusing?",
        "How can I help my {age}-year-old daughter concentrate for longer?",
        "The games show attention is an area to watch for my {age}-year-old. What can we try?",
        "Any ideas for a {age}-year-old who drifts off during tasks?",
    ),
    "PROBLEM_SOLVING": (
        "My {age}-year-old gives up quickly when something is tricky. How can I help?",
        "How can I help my {age}-year-old get better at solving problems?",
        "The report says problem solving is worth watching for my {age}-year-old. What can we do?",
        "What games help a {age}-year-old think things through?",
    ),
    "NUMBER_SENSE": (
        "My {age}-year-old finds numbers hard. How can we practise at home?",
        "How can I make maths fun for my {age}-year-old son?",
        "The games show number sense is low for my {age}-year-old. What can we try?",
        "Any everyday ideas to build number skills in a {age}-year-old?",
    ),
    "EMOTION_RECOGNITION": (
        "My {age}-year-old has trouble reading other people's feelings. How can I help?",
        "How can I teach my {age}-year-old to recognise emotions?",
        "The report says emotion recognition is worth watching for my {age}-year-old. Ideas?",
        "What games help a {age}-year-old understand faces and feelings?",
    ),
    "SOCIAL_INTERACTION": (
        "My {age}-year-old struggles to play with other children. What can we practise?",
        "How can I help my {age}-year-old daughter get along with friends?",
        "The games show social interaction is an area to watch for my {age}-year-old. What helps?",
        "Any ideas to build social skills in a {age}-year-old?",
    ),
    "low_mood": (
        "My {age}-year-old has seemed down lately. How can I support him?",
        "The mood check-ins of my {age}-year-old have been low. What should I do?",
        "How can I help my {age}-year-old when she feels sad?",
    ),
    "engagement": (
        "My {age}-year-old has stopped playing the games. Should I worry?",
        "My {age}-year-old has lost interest in the app. What does that mean?",
    ),
    "performance_drop": (
        "My {age}-year-old's results dropped from her usual level. What should I do?",
        "Why would a {age}-year-old suddenly do worse in the games?",
    ),
}
_BAND_AGE = {"4-6": 5, "7-9": 8, "10-12": 11}


def load_tips(tips_path: Path = DEFAULT_TIPS_PATH) -> list[QaItem]:
    try:
        tips = json.loads(tips_path.read_text(encoding="utf-8"))["tips"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{tips_path}: not a tips library ({exc})") from None
    items: list[QaItem] = []
    for i, tip in enumerate(tips):
        where = f"{tips_path.name} tips[{i}]"
        topic = tip.get("topics", ["skill"])[0]
        key = tip.get("domain", "") if topic == "skill" else topic
        templates = _DOMAIN_QUESTIONS.get(key)
        age = _BAND_AGE.get(tip.get("age_band", ""))
        if templates is None or age is None:
            raise CorpusError(f"{where}: no question templates for {key!r} / age band "
                              f"{tip.get('age_band')!r}")
        picked = [templates[(i + k) % len(templates)] for k in range(2)]
        answer = f"{_text(tip, 'body', where, 40)} {_text(tip, 'when_to_seek_help', where, 20)}"
        items.append(QaItem(f"tip-{_text(tip, 'tip_id', where, 2)}", f"tips:{key}",
                            tuple(t.format(age=age) for t in picked), answer, "tips"))
    return items


def load_material(qa_dir: Path = DEFAULT_QA_DIR,
                  tips_path: Path | None = DEFAULT_TIPS_PATH) -> list[QaItem]:
    items: Iterable[QaItem] = load_qa(qa_dir)
    if tips_path is not None:
        items = [*items, *load_tips(tips_path)]
    return list(items)
