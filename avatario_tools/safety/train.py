"""Build the safety classifier: corpus -> hashed n-grams -> logistic regression -> files.

`build()` is deterministic: a fixed corpus, a fixed solver (lbfgs, one BLAS thread), float16
coefficients written into a zip with fixed timestamps, and metadata without clocks. The same
library versions give byte-identical files (test_safety_classifier_build checks it).

Base-rate prior. The corpus holds about as many harmful messages as benign ones, but real
chat is overwhelmingly benign, and a logistic regression's intercepts learn the training mix:
a message with few known features (a short follow-up such as "She is 6.") then leans toward
whatever class the intercepts favour. After each fit the intercepts are corrected to the
deployment prior PRIOR by Bayes' rule (Saerens et al., 2002, "Adjusting the outputs of a
classifier to new a priori probabilities"): b_c += log(PRIOR[c] / share of c in the fitted
rows), so the stored scores are probabilities under the stated mix. The number is an
ASSUMPTION, stated plainly: no traffic exists yet to measure it. We assume 2 % of parent chat
messages fall in one of the four categories (0.5 % each, no reason to rank them) and 98 % are
benign; for a parenting-advice chat this is deliberately on the high side, so the correction
does not lean too far toward benign. Revise it from the decision metrics
(avatario_inference_safety_decisions_total) once there is real traffic. Because the four
categories share one prior, the correction is a monotone map of the total harm score; the
thresholds below are chosen on the corrected scores.

Thresholds are chosen on the VALIDATION split (templates never seen in training), with the
rules (layer 1) in front, leaning to recall on the dangerous categories, against each of the
two benign populations separately (so the many easy ordinary-chat messages cannot loosen the
thresholds for the look-alikes), taking the stricter:

- answer[c]: the lowest score at which at most ANSWER_BENIGN of the benign look-alikes (and
  ORDINARY_ANSWER of the ordinary chat) in validation that the rules let through would get
  category c's fixed answer, never below ANSWER_FLOOR;
- borderline[c]: the same with BORDERLINE_BENIGN and ORDINARY_BORDERLINE (the model's reply
  plus one help line is a mild outcome for a benign message), never below BORDERLINE_FLOOR
  and never above answer[c].

The floors are only a safety net for a validation split too clean to set a threshold, and
are tied to the stated prior: ANSWER_FLOOR is the prior harm share (never the fixed answer for
a message the classifier finds no more likely harmful than an average message), and
BORDERLINE_FLOOR is one category's prior share.
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

from avatario_tools.safety.corpus import (
    LABELS,
    corpus_hash,
    generate,
    is_ordinary_chat,
    sizes,
)
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
# Assumed deployment mix (see the module docstring): 98 % benign, 0.5 % per category.
PRIOR = {"benign": 0.98, "crisis": 0.005, "abuse": 0.005, "medical_emergency": 0.005,
         "medication_dosing": 0.005}
ANSWER_BENIGN = 0.005
BORDERLINE_BENIGN = 0.03
ORDINARY_ANSWER = 0.001
ORDINARY_BORDERLINE = 0.002
ANSWER_FLOOR = 0.02  # = the prior harm share
BORDERLINE_FLOOR = 0.005  # = one category's prior
STEP = 0.001  # threshold grid
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
    """Lowest score (STEP grid) that at most share * n_benign of these benign scores reach."""
    allowed = int(share * n_benign)
    ranked = np.sort(harm)[::-1]
    t = floor if ranked.size <= allowed else float(np.ceil((ranked[allowed] + 1e-9) / STEP) * STEP)
    return float(round(min(max(floor, t), 0.99), 3))


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


def prior_shift(classes, y: np.ndarray) -> np.ndarray:
    """Per class, log(PRIOR / share in y): added to the intercepts (Bayes' rule for a new prior)."""
    shares = np.array([np.mean(y == c) for c in classes])
    return np.log(np.array([PRIOR[c] for c in classes]) / shares)


def _fit(x, y) -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
    with threadpool_limits(limits=1):
        model = LogisticRegression(C=C, max_iter=MAX_ITER, solver="lbfgs", tol=1e-6)
        model.fit(x, y)
    # stored as float16 (features, classes); scores are computed from these values
    intercept = model.intercept_ + prior_shift(model.classes_, y)
    return model, model.coef_.T.astype(np.float16), intercept.astype(np.float32)


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
    passed = [i for i in val if labels[i] == BENIGN and rules_cat[i] is None]
    populations = (  # (validation messages, answer share, borderline share)
        ([i for i in passed if not is_ordinary_chat(examples[i].group)],
         ANSWER_BENIGN, BORDERLINE_BENIGN),
        ([i for i in passed if is_ordinary_chat(examples[i].group)],
         ORDINARY_ANSWER, ORDINARY_BORDERLINE),
    )
    thresholds: dict[str, Thresholds] = {}
    for c in cats:
        answer, borderline = ANSWER_FLOOR, BORDERLINE_FLOOR
        for rows, answer_share, borderline_share in populations:
            harm = np.array([sum(scores[i].values()) for i in rows
                             if max(scores[i], key=lambda k: (scores[i][k], k)) == c])
            answer = max(answer, _threshold(harm, len(rows), answer_share, ANSWER_FLOOR))
            borderline = max(borderline, _threshold(harm, len(rows), borderline_share,
                                                    BORDERLINE_FLOOR))
        thresholds[c] = Thresholds(answer, min(answer, borderline))

    evaluation = {}
    never = {c: Thresholds(2.0, 2.0) for c in cats}
    for name in ("validation", "test"):
        idx = np.flatnonzero(split == name)
        r = [rules_cat[i] for i in idx]
        s_ = [scores[i] for i in idx]
        evaluation[name] = {"layered": _rates(labels[idx], r, s_, thresholds),
                            "rules_only": _rates(labels[idx], r, s_, never)}
        chat_idx = [j for j, i in enumerate(idx) if is_ordinary_chat(examples[i].group)]
        evaluation[name]["layered_ordinary_chat"] = _rates(
            labels[idx][chat_idx], [r[j] for j in chat_idx], [s_[j] for j in chat_idx],
            thresholds)

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
        "prior": {"classes": PRIOR, "applied_to": "intercepts, after each fit",
                  "source": "assumption (no traffic yet): 2 % of messages harmful, 0.5 % per "
                            "category; see avatario_tools/safety/train.py"},
        "threshold_rule": {"chosen_on": "validation", "answer_benign_share": ANSWER_BENIGN,
                           "answer_floor": ANSWER_FLOOR,
                           "borderline_benign_share": BORDERLINE_BENIGN,
                           "borderline_floor": BORDERLINE_FLOOR,
                           "ordinary_chat_answer_share": ORDINARY_ANSWER,
                           "ordinary_chat_borderline_share": ORDINARY_BORDERLINE,
                           "grid": STEP},
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
    log(f"validation, ordinary chat: {json.dumps(evaluation['validation']['layered_ordinary_chat'])}")
    log(f"test: {json.dumps(evaluation['test']['layered'])}")
    log(f"test (shipped model): {json.dumps(evaluation['test_shipped_model']['layered'])}")
    log(f"wrote {coef_path} ({coef_path.stat().st_size} bytes) in {time.perf_counter() - t0:.1f} s")
    return meta
