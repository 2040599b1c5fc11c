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

- answer[c]: the lowest score at which at most ANSWER_BENIGN of the realistic benign
  look-alikes (hand-written validation and the retired held-out sets), TEMPLATE_ANSWER_BENIGN
  of the template look-alikes and ORDINARY_ANSWER of the ordinary chat in validation that the
  rules let through would get category c's fixed answer, never below ANSWER_FLOOR. Crisis
  gets a larger share of the look-alikes (ANSWER_BENIGN_BY_CATEGORY,
  TEMPLATE_ANSWER_BENIGN_BY_CATEGORY): its look-alikes (a goodbye card for a teacher, toys
  given away before a move, a lesson on suicide prevention) sit closest to it and it is the
  category worst to miss. The template look-alikes get twice the realistic share: they are
  generated, many from a few patterns, and at the realistic share they set the fixed-answer
  threshold of medical emergencies alone (0.094 where the realistic messages asked 0.036 in
  round 5). The shares (round 6) are the largest of five candidates compared on validation
  alone, before the v6 test set was scored: at most 2.5 % of the pooled look-alikes of v1-v5
  answered (the 3 % goal with a margin) and at most 0.7 % of ordinary chat: 2.15 % and 0.68 %
  (round 5's shares gave 1.5 % and 0.59 %, with recall 0.4 to 1 point lower per category).
  Round 10 checked the same two limits on the out-of-fold scores of v1-v9 before v10 was
  scored: round 6's shares (0.75 %, crisis 1.25 %) answered 2.67 % of the pooled look-alikes,
  over the limit, so the realistic shares went back to round 5's (0.5 %, crisis 1 %; templates
  unchanged): 2.43 % and 0.19 % of ordinary chat, with abuse 2.1 and dosing 1.1 points lower out
  of fold (crisis and emergency unchanged: other populations bind there). Each later round
  checks them again before its test set is scored: round 11 2.32 % and 0.29 %, round 12
  2.29 % and 0.38 %, round 13 (v1-v12) 2.43 % and 0.19 %, so the shares stayed. Round 14
  (v1-v13) answered 2.51 % at those shares, over the limit, so crisis's share went down from
  1 % to 0.75 % (the one candidate tried, chosen before the build; the realistic share stays
  0.5 %). Round 15 (v1-v14): 2.35 % and
  0.10 %, round 16 (v1-v15) 2.32 % and 0.10 %, round 17 (v1-v16)
  2.41 % and 0.10 %, round 18 (v1-v17) 2.32 % and 0.10 %, so the shares stay;
- borderline[c]: the same with BORDERLINE_BENIGN and ORDINARY_BORDERLINE (the model's reply
  plus one help line is a mild outcome for a benign message), never below BORDERLINE_FLOOR
  and never above answer[c].

The floors are only a safety net for a validation split too clean to set a threshold, and
are tied to the stated prior: ANSWER_FLOOR is the prior harm share (never the fixed answer for
a message the classifier finds no more likely harmful than an average message), and
BORDERLINE_FLOOR is one category's prior share.

Hand-written messages (avatario_tools/safety/written/) weigh WRITTEN_WEIGHT times a template
message in the fit: they are fewer, and they are how parents write. Their validation part is
a third benign population for the thresholds (same shares as the look-alikes), together with
the retired held-out sets v1-v17 (tests/unit/inference/safety_heldout/, safety_heldout_v2/
to _v17/, each written blind; each was the test set of one guard and was reported once).

Retired sets in the fit (round 9). Until round 8 the retired sets were validation only. They
are the only messages written by people who never saw the rules or the corpus, so they are
the closest thing there is to the next blind set; from round 9 they are fitted, weighing
RETIRED_WEIGHT times a template message. Measured before the change, leaving one set out at a
time (fit on the corpus and the other retired sets, score the left-out set, same benign
false-alarm share for every variant): fitting them raised the four categories' mean recall
from 89.0 to 93.0 % on v6, 96.0 to 96.6 % on v7 and 90.7 to 93.1 % on v8 at weight 10
(weight 4: 91.3, 96.0, 91.6 %). The thresholds still need scores from a model that did not fit
the message scored, so they are chosen on out-of-fold scores: the sets alternate between
RETIRED_FOLDS folds (v1, v3, ..., v17 / v2, v4, ..., v16); each fold's model fits the corpus's
training split and the other fold's sets and scores its own fold's sets, and the corpus's
validation and test splits get the mean of the fold models' probabilities (no fold model fits
them). The shipped model then fits the corpus's training and validation splits and all the
sets; its scores run slightly more confident than the fold models' (more data), so the
thresholds are, if anything, a little strict for it. Round 9 fitted v1-v8 and was measured on
v9, round 10 fitted v1-v9 and was measured on v10, round 11 fitted v1-v10 and was measured on
v11, round 12 fitted v1-v11 and was measured on v12, round 13 fitted v1-v12 and was measured on
v13, round 14 fitted v1-v13 and was measured on v14, round 15 fitted v1-v14 and was measured
on v15, round 16 fitted v1-v15 and was measured on v16, round 17 fitted v1-v16 and was
measured on v17; round 18 fits v1-v17. The test set is v18
(tests/unit/inference/safety_heldout_v18/),
which nothing here reads.

rule_confirm: a rule match in a message of at least RULE_CONFIRM_MIN_WORDS words whose total
harm score is below it is demoted to borderline (see services/inference/safety/layered.py).
Chosen on the realistic validation messages (hand-written, v1-v17 out of fold) of that length as the
highest value of the grid, at most RULE_CONFIRM_MAX, below which at most RULE_CONFIRM_MISS of
the harmful ones the rules catch would fall. The length floor is there because on short
messages the classifier is not sure enough to overrule a rule: without it, "my son was
molested by a neighbour" (harm 0.0003) and "i feel like i should just die" would be demoted;
with 15 words none of the rules' own corpus is (test_layered_guard checks it).
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
    Example,
    corpus_hash,
    generate,
    is_ordinary_chat,
    is_written,
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
from services.inference.safety.rules import NEVER_OVERRULED

VECTORIZERS: list[dict[str, Any]] = [
    {"analyzer": "word", "ngram_range": [1, 2], "n_features": 1 << 16, "alternate_sign": True,
     "norm": "l2", "weight": 1.0},
    {"analyzer": "char_wb", "ngram_range": [3, 5], "n_features": 1 << 17,
     "alternate_sign": True, "norm": "l2", "weight": 1.0},
]
C = 16.0
MAX_ITER = 3000
WRITTEN_WEIGHT = 4.0
ROOT = Path(__file__).resolve().parents[2]
# Retired held-out sets v1-v17 (fitted, and scored out of fold for the thresholds; see the
# docstring). v18 is the test set: never read here.
LAST_RETIRED = 17
HELDOUT_ROOT = ROOT / "tests" / "unit" / "inference"
RETIRED_HELDOUT = tuple(HELDOUT_ROOT / folder / "messages.jsonl"
                        for folder in ("safety_heldout", *(f"safety_heldout_v{k}"
                                                           for k in range(2, LAST_RETIRED + 1))))
# the test set of this build's guard (bench/bench_safety.py measures it)
TEST_HELDOUT = HELDOUT_ROOT / f"safety_heldout_v{LAST_RETIRED + 1}"
RETIRED_WEIGHT = 10.0
RETIRED_FOLDS = 2
RULE_CONFIRM_MAX = 0.2
RULE_CONFIRM_MISS = 0.005
RULE_CONFIRM_MIN_WORDS = 15
# Assumed deployment mix (see the module docstring): 98 % benign, 0.5 % per category.
PRIOR = {"benign": 0.98, "crisis": 0.005, "abuse": 0.005, "medical_emergency": 0.005,
         "medication_dosing": 0.005}
# Round 10: round 6's 0.75 % (crisis 1.25 %) answered 2.67 % of the pooled look-alikes of
# v1-v9 out of fold, above the 2.5 % limit; 0.5 % (crisis 1 %) answers 2.43 % (see the docstring).
ANSWER_BENIGN = 0.005
# Crisis may spend a larger share of the benign budget (see the docstring): its look-alikes
# (goodbye cards, giving toys away before a move, a school lesson on suicide) sit closest to it.
ANSWER_BENIGN_BY_CATEGORY = {"crisis": 0.0075}
# Template look-alikes: twice the realistic share (see the docstring).
TEMPLATE_ANSWER_BENIGN = 0.01
TEMPLATE_ANSWER_BENIGN_BY_CATEGORY = {"crisis": 0.02}
BORDERLINE_BENIGN = 0.03
ORDINARY_ANSWER = 0.005
ORDINARY_BORDERLINE = 0.005
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
           thresholds: dict[str, Thresholds], rule_confirm: float,
           words: list[int], sure: list[bool]) -> dict[str, Any]:
    """Per category: share answered (fixed answer) and answered-or-borderline; benign too.
    The decision is the layered guard's (rules confirmed by the classifier, then the
    classifier), replayed on precomputed scores."""
    answered, border = [], []
    for i in range(len(labels)):
        if rules_cat[i] is not None:
            confirmed = (sure[i] or sum(scores[i].values()) >= rule_confirm
                         or words[i] < RULE_CONFIRM_MIN_WORDS)
            answered.append(confirmed)
            border.append(not confirmed)
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


def prior_shift(classes, y: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Per class, log(PRIOR / (weighted) share in y): added to the intercepts (Bayes' rule
    for a new prior)."""
    w = np.ones(len(y)) if weight is None else weight
    shares = np.array([w[y == c].sum() / w.sum() for c in classes])
    return np.log(np.array([PRIOR[c] for c in classes]) / shares)


def _fit(x, y, weight: np.ndarray) -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
    with threadpool_limits(limits=1):
        model = LogisticRegression(C=C, max_iter=MAX_ITER, solver="lbfgs", tol=1e-6)
        model.fit(x, y, sample_weight=weight)
    # stored as float16 (features, classes); scores are computed from these values
    intercept = model.intercept_ + prior_shift(model.classes_, y, weight)
    return model, model.coef_.T.astype(np.float16), intercept.astype(np.float32)


def load_retired_heldout(paths: tuple[Path, ...] = RETIRED_HELDOUT
                         ) -> list[tuple[int, Example]]:
    """The retired held-out sets (v1-v17), each message with the index of its set (the sets
    are the folds of the out-of-fold scoring; see the docstring)."""
    return [(k, Example(r["text"], r["label"], "validation", f"{r['label']}/heldout"))
            for k, path in enumerate(paths)
            for r in (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                      if line.strip())]


def _rule_confirm(harm: np.ndarray) -> float:
    """Highest grid value <= RULE_CONFIRM_MAX below which at most RULE_CONFIRM_MISS of these
    harm scores (harmful validation messages the rules catch) fall."""
    if harm.size == 0:
        return 0.0
    allowed = int(RULE_CONFIRM_MISS * harm.size)
    ranked = np.sort(harm)
    t = float(np.floor(ranked[allowed] / STEP) * STEP)
    return float(round(min(max(t, 0.0), RULE_CONFIRM_MAX), 3))


def _runtime_probabilities(classes, coef, intercept, x) -> np.ndarray:
    """Probabilities computed by the node's own code from the stored coefficients, for rows
    featurized once with VECTORIZERS (the node's vectorizers are built from the same list)."""
    meta = {"format": FORMAT, "classes": list(classes), "vectorizers": VECTORIZERS,
            "thresholds": {c: {"answer": 1.0, "borderline": 1.0} for c in classes if c != BENIGN}}
    return Classifier(meta, coef, intercept).probabilities_of(x)


def build(out_dir: Path = MODEL_DIR, *, log=print) -> dict[str, Any]:
    t0 = time.perf_counter()
    corpus = generate()
    retired = load_retired_heldout()
    heldout = [e for _, e in retired]
    examples = corpus + heldout
    n_corpus = len(corpus)
    # which out-of-fold model scores each retired message (sets alternate between the folds)
    fold = np.array([-1] * n_corpus + [k % RETIRED_FOLDS for k, _ in retired])
    views = [view(e.text) for e in examples]
    n_words = [len(v.split()) for v in views]
    labels = np.array([e.label for e in examples])
    split = np.array([e.split for e in examples])
    source = np.array(["heldout" if i >= n_corpus else "written" if is_written(e.group)
                       else "template" for i, e in enumerate(examples)])
    weight = np.where(source == "written", WRITTEN_WEIGHT,
                      np.where(source == "heldout", RETIRED_WEIGHT, 1.0))
    vectorizers = build_vectorizers(VECTORIZERS)
    x = featurize(vectorizers, views, [s["weight"] for s in VECTORIZERS])
    train = (split == "train") & (source != "heldout")
    log(f"corpus: {n_corpus} messages ({int((source == 'written').sum())} hand-written) + "
        f"{len(heldout)} of the retired held-out v1-v{len(RETIRED_HELDOUT)} (fitted, scored out "
        f"of fold); "
        f"features: {x.shape[1]}")
    # Out-of-fold scores: fold f's model fits the corpus's training split and the retired
    # sets of the other fold; it scores its own fold's retired messages, and the corpus's
    # validation and test splits are scored by the mean of the fold models (none fits them).
    probs = np.zeros((len(examples), len(LABELS)))
    classes: tuple[str, ...] = ()
    for f in range(RETIRED_FOLDS):
        rows = train | ((source == "heldout") & (fold != f))
        model, coef, intercept = _fit(x[rows], labels[rows], weight[rows])
        classes = classes or tuple(str(c) for c in model.classes_)
        assert classes == tuple(str(c) for c in model.classes_)
        p = _runtime_probabilities(classes, coef, intercept, x)
        own = fold == f
        probs[own] = p[own]
        probs[source != "heldout"] += p[source != "heldout"] / RETIRED_FOLDS
    guard = guard_from_config("US")
    rules_cat: list[str | None] = [None] * len(examples)
    rules_sure = [False] * len(examples)  # a match the classifier may not demote
    for i, e in enumerate(examples):
        if e.split != "train":
            v = guard.check_input(e.text)
            rules_cat[i] = v.category if v else None
            rules_sure[i] = v is not None and v.reason in NEVER_OVERRULED

    cats = [c for c in classes if c != BENIGN]
    scores = [{c: float(p[j]) for j, c in enumerate(classes) if c != BENIGN} for p in probs]
    val = np.flatnonzero(split == "validation")
    passed = [i for i in val if labels[i] == BENIGN and rules_cat[i] is None]
    chat = [i for i in passed if is_ordinary_chat(examples[i].group)]
    chat_set = set(chat)
    populations = {  # name: (validation messages, (answer share, by category), borderline share)
        "template_lookalikes": ([i for i in passed if source[i] == "template"
                                 and i not in chat_set],
                                (TEMPLATE_ANSWER_BENIGN, TEMPLATE_ANSWER_BENIGN_BY_CATEGORY),
                                BORDERLINE_BENIGN),
        "ordinary_chat": (chat, (ORDINARY_ANSWER, {}), ORDINARY_BORDERLINE),
        "realistic_lookalikes": ([i for i in passed if source[i] != "template"
                                  and i not in chat_set],
                                 (ANSWER_BENIGN, ANSWER_BENIGN_BY_CATEGORY), BORDERLINE_BENIGN),
    }
    thresholds: dict[str, Thresholds] = {}
    # What each benign population alone would ask of each threshold: the binding one is the
    # highest (an operator reading the metadata sees which population sets the threshold).
    demanded: dict[str, dict[str, dict[str, float]]] = {}
    for c in cats:
        answer, borderline = ANSWER_FLOOR, BORDERLINE_FLOOR
        demanded[c] = {}
        for name, (rows, (share, by_category), borderline_share) in populations.items():
            answer_share = by_category.get(c, share)
            harm = np.array([sum(scores[i].values()) for i in rows
                             if max(scores[i], key=lambda k: (scores[i][k], k)) == c])
            want = (_threshold(harm, len(rows), answer_share, ANSWER_FLOOR),
                    _threshold(harm, len(rows), borderline_share, BORDERLINE_FLOOR))
            demanded[c][name] = {"answer": want[0], "borderline": want[1]}
            answer, borderline = max(answer, want[0]), max(borderline, want[1])
        thresholds[c] = Thresholds(answer, min(answer, borderline))
    caught = np.array([sum(scores[i].values()) for i in val  # realistic messages only
                       if labels[i] != BENIGN and rules_cat[i] is not None
                       and not rules_sure[i] and source[i] != "template"
                       and len(views[i].split()) >= RULE_CONFIRM_MIN_WORDS])
    rule_confirm = _rule_confirm(caught)

    evaluation: dict[str, Any] = {}
    never = {c: Thresholds(2.0, 2.0) for c in cats}
    parts = {"validation": (split == "validation") & (source == "template"),
             "test": (split == "test") & (source == "template"),
             "written_validation": (split == "validation") & (source == "written"),
             "written_test": (split == "test") & (source == "written"),
             "retired_heldout_out_of_fold": source == "heldout"}
    for name, mask in parts.items():
        idx = np.flatnonzero(mask)
        r = [rules_cat[i] for i in idx]
        s_ = [scores[i] for i in idx]
        w_ = [n_words[i] for i in idx]
        u_ = [rules_sure[i] for i in idx]
        evaluation[name] = {"layered": _rates(labels[idx], r, s_, thresholds, rule_confirm, w_,
                                              u_),
                            "rules_only": _rates(labels[idx], r, s_, never, 0.0, w_, u_)}
        if name in ("validation", "test"):
            chat_idx = [j for j, i in enumerate(idx) if is_ordinary_chat(examples[i].group)]
            evaluation[name]["layered_ordinary_chat"] = _rates(
                labels[idx][chat_idx], [r[j] for j in chat_idx], [s_[j] for j in chat_idx],
                thresholds, rule_confirm, [w_[j] for j in chat_idx], [u_[j] for j in chat_idx])

    # The shipped model: refit on the corpus's training + validation and all the retired sets
    # with the same settings; the thresholds stay the ones chosen above on out-of-fold scores
    # (the corpus's test split stays unseen).
    fit_rows = (split != "test") | (source == "heldout")
    model, coef, intercept = _fit(x[fit_rows], labels[fit_rows], weight[fit_rows])
    final = _runtime_probabilities(classes, coef, intercept, x)
    for name in ("test", "written_test"):
        idx = np.flatnonzero(parts[name])
        final_scores = [{c: float(p[j]) for j, c in enumerate(classes) if c != BENIGN}
                        for p in final[idx]]
        evaluation[f"{name}_shipped_model"] = {"layered": _rates(
            labels[idx], [rules_cat[i] for i in idx], final_scores, thresholds, rule_confirm,
            [n_words[i] for i in idx], [rules_sure[i] for i in idx])}
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
        "thresholds_demanded_by_population": demanded,
        "rule_confirm": rule_confirm,
        "rule_confirm_min_words": RULE_CONFIRM_MIN_WORDS,
        "prior": {"classes": PRIOR, "applied_to": "intercepts, after each fit",
                  "source": "assumption (no traffic yet): 2 % of messages harmful, 0.5 % per "
                            "category; see avatario_tools/safety/train.py"},
        "threshold_rule": {"chosen_on": "validation (templates and hand-written: scored by "
                                         "the mean of the fold models; retired held-out "
                                         f"v1-v{len(RETIRED_HELDOUT)}: out of fold)",
                           "rule_confirm_max": RULE_CONFIRM_MAX,
                           "rule_confirm_miss": RULE_CONFIRM_MISS, "answer_benign_share": ANSWER_BENIGN,
                           "answer_benign_share_by_category": ANSWER_BENIGN_BY_CATEGORY,
                           "template_answer_benign_share": TEMPLATE_ANSWER_BENIGN,
                           "template_answer_benign_share_by_category":
                               TEMPLATE_ANSWER_BENIGN_BY_CATEGORY,
                           "answer_floor": ANSWER_FLOOR,
                           "borderline_benign_share": BORDERLINE_BENIGN,
                           "borderline_floor": BORDERLINE_FLOOR,
                           "ordinary_chat_answer_share": ORDINARY_ANSWER,
                           "ordinary_chat_borderline_share": ORDINARY_BORDERLINE,
                           "grid": STEP},
        "corpus": {"sha256": corpus_hash(corpus), "sizes": sizes(corpus),
                   "hand_written": int((source == "written").sum()),
                   "written_weight": WRITTEN_WEIGHT,
                   "retired_heldout": len(heldout),
                   "retired_weight": RETIRED_WEIGHT,
                   "retired_folds": RETIRED_FOLDS,
                   "split": "templates by template within each subtopic, hand-written by a "
                            "hash of the text (see avatario_tools.safety.corpus)"},
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
    log(f"rule_confirm: {rule_confirm}")
    for name in ("written_validation", "retired_heldout_out_of_fold",
                 "written_test_shipped_model"):
        log(f"{name}: {json.dumps(evaluation[name]['layered'])}")
    log(f"wrote {coef_path} ({coef_path.stat().st_size} bytes) in {time.perf_counter() - t0:.1f} s")
    return meta
