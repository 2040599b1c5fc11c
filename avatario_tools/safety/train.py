"""Build the safety classifier: corpus -> hashed n-grams -> logistic regression -> files.

`build()` is deterministic: a fixed corpus, a fixed solver (lbfgs, one BLAS thread), float16
coefficients written into a zip with fixed timestamps, and metadata without clocks. The same
library versions give byte-identical files (test_safety_classifier_build checks it).

Thresholds are chosen on the VALIDATION split (templates never seen in training), with the
rules (layer 1) in front, leaning to recall on the dangerous categories:

- answer[c]: the lowest score at which at most ANSWER_BENIGN of the benign validation messages
  that the rules let through would get category c's fixed answer, never below ANSWER_FLOOR;
- borderline[c]: the same with BORDERLINE_BENIGN (the model's reply plus one help line is a
  mild outcome for a benign message), never below BORDERLINE_FLOOR and never above answer[c].
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import sklearn
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from avatario_tools.safety.corpus import LABELS, corpus_hash, generate, sizes
from services.inference.safety import guard_from_config
from services.inference.safety.classifier import (
    BENIGN,
    COEF_NAME,
    FORMAT,
    META_NAME,
    MODEL_DIR,
    Classifier,
    Thresholds,
    build_vectorizers,
    decide,
    featurize,
    file_sha256,
    view,
)

VECTORIZERS: list[dict[str, Any]] = [
    {"analyzer": "word", "ngram_range": [1, 2], "n_features": 1 << 16, "alternate_sign": True,
     "norm": "l2", "weight": 1.0},
    {"analyzer": "char_wb", "ngram_range": [3, 5], "n_features": 1 << 17,
     "alternate_sign": True, "norm": "l2", "weight": 1.0},
]
C = 4.0
MAX_ITER = 3000
ANSWER_BENIGN = 0.005
ANSWER_FLOOR = 0.35
BORDERLINE_BENIGN = 0.03
BORDERLINE_FLOOR = 0.15
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (np.load reads it) with fixed entry timestamps, so builds are byte-identical."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.getvalue(), compresslevel=9)
    return buf.getvalue()


def _threshold(harm: np.ndarray, n_benign: int, share: float, floor: float) -> float:
    """Lowest score (0.01 steps) that at most share * n_benign of these benign scores reach."""
    allowed = int(share * n_benign)
    ranked = np.sort(harm)[::-1]
    t = floor if ranked.size <= allowed else float(np.ceil((ranked[allowed] + 1e-9) * 100) / 100)
    return float(round(min(max(floor, t), 0.99), 2))


def _rates(labels: np.ndarray, rules_cat: list[str | None], scores: list[dict[str, float]],
           thresholds: dict[str, Thresholds]) -> dict[str, Any]:
    """Per category: share answered (fixed answer) and answered-or-borderline; benign too."""
    answered, border = [], []
    for i in range(len(labels)):
        if rules_cat[i] is not None:
            answered.append(True)
            border.append(False)
            continue
        a, b = decide(scores[i], thresholds)
        answered.append(a is not None)
        border.append(b is not None)
    out: dict[str, Any] = {}
    for c in LABELS:
        idx = [i for i in range(len(labels)) if labels[i] == c]
        if not idx:
            continue
        a = round(sum(answered[i] for i in idx) / len(idx), 4)
        b = round(sum(border[i] for i in idx) / len(idx), 4)
        if c == BENIGN:
            out[c] = {"n": len(idx), "answered": a, "borderline": b}
        else:
            out[c] = {"n": len(idx), "answered": a, "answered_or_borderline": round(a + b, 4)}
    return out


def _fit(x, y) -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
    with threadpool_limits(limits=1):
        model = LogisticRegression(C=C, max_iter=MAX_ITER, solver="lbfgs", tol=1e-6)
        model.fit(x, y)
    # stored as float16 (features, classes); scores are computed from these values
    return model, model.coef_.T.astype(np.float16), model.intercept_.astype(np.float32)


def _runtime_probabilities(classes, coef, intercept, views: list[str]) -> np.ndarray:
    """Probabilities computed by the node's own code from the stored coefficients."""
    meta = {"format": FORMAT, "classes": list(classes), "vectorizers": VECTORIZERS,
            "thresholds": {c: {"answer": 1.0, "borderline": 1.0} for c in classes if c != BENIGN}}
    return Classifier(meta, coef, intercept).probabilities(views)


def build(out_dir: Path = MODEL_DIR, *, log=print) -> dict[str, Any]:
    t0 = time.perf_counter()
    examples = generate()
    views = [view(e.text) for e in examples]
    labels = np.array([e.label for e in examples])
    split = np.array([e.split for e in examples])
    vectorizers = build_vectorizers(VECTORIZERS)
    x = featurize(vectorizers, views, [s["weight"] for s in VECTORIZERS])
    train = split == "train"
    log(f"corpus: {len(examples)} messages; features: {x.shape[1]}")
    model, coef, intercept = _fit(x[train], labels[train])
    classes = tuple(str(c) for c in model.classes_)
    probs = _runtime_probabilities(classes, coef, intercept, views)
    guard = guard_from_config("US")
    rules_cat = [None] * len(examples)
    for i, e in enumerate(examples):
        if e.split != "train":
            v = guard.check_input(e.text)
            rules_cat[i] = v.category if v else None

    cats = [c for c in classes if c != BENIGN]
    scores = [{c: float(p[j]) for j, c in enumerate(classes) if c != BENIGN} for p in probs]
    val = np.flatnonzero(split == "validation")
    benign_val = [i for i in val if labels[i] == BENIGN and rules_cat[i] is None]
    thresholds: dict[str, Thresholds] = {}
    for c in cats:
        harm = np.array([sum(scores[i].values()) for i in benign_val
                         if max(scores[i], key=lambda k: (scores[i][k], k)) == c])
        answer = _threshold(harm, len(benign_val), ANSWER_BENIGN, ANSWER_FLOOR)
        borderline = min(answer, _threshold(harm, len(benign_val), BORDERLINE_BENIGN,
                                            BORDERLINE_FLOOR))
        thresholds[c] = Thresholds(answer, borderline)

    evaluation = {}
    never = {c: Thresholds(2.0, 2.0) for c in cats}
    for name in ("validation", "test"):
        idx = np.flatnonzero(split == name)
        r = [rules_cat[i] for i in idx]
        s_ = [scores[i] for i in idx]
        evaluation[name] = {"layered": _rates(labels[idx], r, s_, thresholds),
                            "rules_only": _rates(labels[idx], r, s_, never)}

    # The shipped model: refit on training + validation with the same settings; the
    # thresholds stay the ones chosen on validation above (test stays unseen).
    fit_rows = split != "test"
    model, coef, intercept = _fit(x[fit_rows], labels[fit_rows])
    final = _runtime_probabilities(classes, coef, intercept, views)
    idx = np.flatnonzero(split == "test")
    final_scores = [{c: float(p[j]) for j, c in enumerate(classes) if c != BENIGN}
                    for p in final[idx]]
    evaluation["test_shipped_model"] = {"layered": _rates(
        labels[idx], [rules_cat[i] for i in idx], final_scores, thresholds)}
    thresholds_json = {c: {"answer": t.answer, "borderline": t.borderline}
                       for c, t in thresholds.items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    coef_path = out_dir / COEF_NAME
    coef_path.write_bytes(_npz_bytes({"coef": coef, "intercept": intercept}))
    meta = {
        "format": FORMAT,
        "about": "Safety input classifier (layer 2); built by `python -m avatario_tools.safety "
                 "build`. Scores = softmax over classes of (hashed features @ coef + intercept).",
        "view": "services.inference.safety.text.norm",
        "classes": list(classes),
        "vectorizers": VECTORIZERS,
        "model": {"kind": "LogisticRegression", "solver": "lbfgs", "C": C, "max_iter": MAX_ITER,
                  "coefficient_dtype": "float16", "iterations": int(np.max(model.n_iter_))},
        "thresholds": thresholds_json,
        "threshold_rule": {"chosen_on": "validation", "answer_benign_share": ANSWER_BENIGN,
                           "answer_floor": ANSWER_FLOOR,
                           "borderline_benign_share": BORDERLINE_BENIGN,
                           "borderline_floor": BORDERLINE_FLOOR},
        "corpus": {"sha256": corpus_hash(examples), "sizes": sizes(examples),
                   "split": "by template within each subtopic (see avatario_tools.safety.corpus)"},
        "evaluation": evaluation,
        "libraries": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                      "scipy": scipy.__version__},
        "coefficients_sha256": file_sha256(coef_path),
    }
    (out_dir / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n",
                                     encoding="utf-8")
    log(f"thresholds: {json.dumps(thresholds_json)}")
    log(f"validation: {json.dumps(evaluation['validation']['layered'])}")
    log(f"test: {json.dumps(evaluation['test']['layered'])}")
    log(f"test (shipped model): {json.dumps(evaluation['test_shipped_model']['layered'])}")
    log(f"wrote {coef_path} ({coef_path.stat().st_size} bytes) in {time.perf_counter() - t0:.1f} s")
    return meta
