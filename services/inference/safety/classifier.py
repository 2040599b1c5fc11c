"""Layer 2 of the input guard: a linear classifier over hashed word and character n-grams.

The model lives in `model/` as two files written by `python -m avatario_tools.safety build`:
`classifier.json` (vectorizer parameters, classes, thresholds chosen on the validation split,
corpus hash, library versions, the coefficient file's sha256) and `classifier.npz` (the
coefficients and intercepts, nothing else: no pickle). At start the node rebuilds the same
scikit-learn `HashingVectorizer`s from the stored parameters (they are stateless) and scores
a message with the stored coefficients: a softmax over benign and the four input categories.

The classifier reads the guard's own normalised view of a message (`safety.text.norm`:
Unicode tricks undone, lower case, punctuation as spaces, slang and key misspellings fixed),
so layer 1 and layer 2 see the same text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from services.inference.planner import ConfigError
from services.inference.safety.text import norm

MODEL_DIR = Path(__file__).resolve().parent / "model"
META_NAME = "classifier.json"
COEF_NAME = "classifier.npz"
FORMAT = 1
BENIGN = "benign"
# Only these HashingVectorizer parameters may come from the metadata file.
_VECTORIZER_KEYS = {"analyzer", "ngram_range", "n_features", "alternate_sign", "norm",
                    "binary", "weight"}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score bounds for one category: at or above `answer` the fixed answer; at or above
    `borderline` (and below `answer`) the model's reply plus a help line."""

    answer: float
    borderline: float


def view(message: str) -> str:
    """The text the classifier reads: the input guard's normalised view."""
    return norm(message)


def build_vectorizers(specs: list[dict[str, Any]]) -> list[HashingVectorizer]:
    """The stateless vectorizers described by the metadata (same at build and at start)."""
    out = []
    for spec in specs:
        unknown = set(spec) - _VECTORIZER_KEYS
        if unknown:
            raise ConfigError(f"unknown vectorizer parameters: {', '.join(sorted(unknown))}")
        out.append(HashingVectorizer(
            analyzer=spec["analyzer"], ngram_range=tuple(spec["ngram_range"]),
            n_features=int(spec["n_features"]), alternate_sign=bool(spec["alternate_sign"]),
            norm=spec["norm"], binary=bool(spec.get("binary", False)), lowercase=False,
            dtype=np.float32))
    return out


def featurize(vectorizers: list[HashingVectorizer], views: list[str],
              weights: list[float] | None = None) -> sp.csr_matrix:
    """Rows of hashed features for already-normalised texts (one block per vectorizer)."""
    blocks = []
    for i, v in enumerate(vectorizers):
        x = v.transform(views)
        if weights is not None and weights[i] != 1.0:
            x = x * np.float32(weights[i])
        blocks.append(x)
    return sp.hstack(blocks, format="csr", dtype=np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Classifier:
    """Scores a parent's message per input category (softmax probabilities in [0, 1])."""

    def __init__(self, meta: dict[str, Any], coef: np.ndarray, intercept: np.ndarray) -> None:
        self.meta = meta
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        if BENIGN not in self.classes:
            raise ConfigError("classifier classes must include 'benign'")
        self.categories = tuple(c for c in self.classes if c != BENIGN)
        self._vectorizers = build_vectorizers(meta["vectorizers"])
        self._weights = [float(s.get("weight", 1.0)) for s in meta["vectorizers"]]
        n_features = sum(v.n_features for v in self._vectorizers)
        if coef.shape != (n_features, len(self.classes)) or intercept.shape != (len(self.classes),):
            raise ConfigError(f"classifier coefficients have shape {coef.shape}, expected "
                              f"({n_features}, {len(self.classes)})")
        self._coef = coef.astype(np.float32)
        self._intercept = intercept.astype(np.float32)
        raw = meta.get("thresholds", {})
        missing = [c for c in self.categories if c not in raw]
        if missing:
            raise ConfigError(f"classifier thresholds missing for {', '.join(missing)}")
        self.thresholds = {c: Thresholds(float(raw[c]["answer"]), float(raw[c]["borderline"]))
                           for c in self.categories}
        # A rule match in a message of at least rule_confirm_min_words words whose total harm
        # score is below rule_confirm is demoted to borderline (see safety/layered.py); 0
        # (older model files) never demotes.
        self.rule_confirm = float(meta.get("rule_confirm", 0.0))
        self.rule_confirm_min_words = int(meta.get("rule_confirm_min_words", 0))
        if not 0.0 <= self.rule_confirm <= 1.0:
            raise ConfigError(f"classifier rule_confirm {self.rule_confirm} is not within [0, 1]")
        if self.rule_confirm_min_words < 0:
            raise ConfigError("classifier rule_confirm_min_words must be >= 0")

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Classifier:
        """Load and check the model files; any problem is a ConfigError (the node stops)."""
        d = Path(directory) if directory is not None else MODEL_DIR
        meta_path, coef_path = d / META_NAME, d / COEF_NAME
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the safety classifier {meta_path}: {exc}; "
                              "rebuild it with `python -m avatario_tools.safety build`") from exc
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT}")
        try:
            digest = file_sha256(coef_path)
        except OSError as exc:
            raise ConfigError(f"cannot read the safety classifier {coef_path}: {exc}") from exc
        if digest != meta.get("coefficients_sha256"):
            raise ConfigError(f"{coef_path} does not match {meta_path} (sha256 differs); "
                              "rebuild with `python -m avatario_tools.safety build`")
        try:
            with np.load(coef_path, allow_pickle=False) as z:
                coef, intercept = z["coef"], z["intercept"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot read the safety classifier {coef_path}: {exc}") from exc
        return cls(meta, coef, intercept)

    def probabilities(self, views: list[str]) -> np.ndarray:
        """Class probabilities (rows: texts, columns: self.classes) for normalised texts."""
        return self.probabilities_of(featurize(self._vectorizers, views, self._weights))

    def probabilities_of(self, x) -> np.ndarray:
        """Class probabilities for rows already featurized with this model's vectorizers."""
        return softmax(np.asarray(x @ self._coef) + self._intercept)

    def overrules(self, message: str, scores: dict[str, float]) -> bool:
        """True when these scores of `message` demote a rule match to borderline: enough
        words of context (rule_confirm_min_words) and a total harm below rule_confirm."""
        return (sum(scores.values()) < self.rule_confirm
                and len(view(message).split()) >= self.rule_confirm_min_words)

    def scores(self, message: str) -> dict[str, float]:
        """Input category -> probability for one raw message ({} for empty text)."""
        text = view(message)
        if not text:
            return {c: 0.0 for c in self.categories}
        p = self.probabilities([text])[0]
        return {c: float(p[i]) for i, c in enumerate(self.classes) if c != BENIGN}


def decide(scores: dict[str, float], thresholds: dict[str, Thresholds]
           ) -> tuple[str | None, str | None]:
    """(category for the fixed answer, borderline category); at most one is set.

    The decision reads the total harm score (1 - P(benign), the sum of the category scores)
    against the thresholds of the most likely category, so a message whose probability is
    split between two dangerous categories (a fall from a height: crisis or emergency?) is not
    missed for lack of a single clear winner.
    """
    if not scores:
        return None, None
    category = max(scores, key=lambda c: (scores[c], c))
    harm = sum(scores.values())
    t = thresholds[category]
    if harm >= t.answer:
        return category, None
    if harm >= t.borderline:
        return None, category
    return None, None
