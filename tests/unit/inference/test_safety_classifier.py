"""The committed safety classifier: what it stores, how it loads, that it rebuilds exactly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy
import sklearn

from services.inference.main import build_guard
from services.inference.planner import ConfigError
from services.inference.safety.classifier import (
    COEF_NAME,
    META_NAME,
    MODEL_DIR,
    Classifier,
    Thresholds,
    decide,
)
from services.inference.settings import InferenceSettings

META = json.loads((MODEL_DIR / META_NAME).read_text(encoding="utf-8"))
SAME_LIBRARIES = META["libraries"] == {"scikit-learn": sklearn.__version__,
                                       "numpy": np.__version__, "scipy": scipy.__version__}


def test_the_model_is_small_and_has_no_pickle():
    size = sum((MODEL_DIR / n).stat().st_size for n in (META_NAME, COEF_NAME))
    assert size < 2_000_000
    with np.load(MODEL_DIR / COEF_NAME, allow_pickle=False) as z:
        assert sorted(z.files) == ["coef", "intercept"]
        assert z["coef"].dtype == np.float16


def test_metadata_describes_the_build():
    assert META["classes"] == ["abuse", "benign", "crisis", "medical_emergency",
                               "medication_dosing"]
    assert META["threshold_rule"]["chosen_on"].startswith("validation")
    assert META["corpus"]["hand_written"] >= 9000  # avatario_tools/safety/written/
    # retired v1-v13: fitted, and scored out of fold for the thresholds
    assert META["corpus"]["retired_heldout"] == (537 + 574 + 764 + 788 + 752 + 772 + 772 + 772
                                                 + 700 * 9)
    assert META["corpus"]["retired_folds"] == 2
    assert "retired_heldout_out_of_fold" in META["evaluation"]
    for split in ("train", "validation", "test"):
        for label, n in ((lab, s[split]) for lab, s in META["corpus"]["sizes"].items()):
            assert n > 0, (label, split)
    for label, s in META["corpus"]["sizes"].items():
        assert sum(s.values()) >= 3000, label
    assert {v["analyzer"] for v in META["vectorizers"]} == {"word", "char_wb"}


def test_the_corpus_is_the_one_the_model_was_built_from():
    # A template edited without `python -m avatario_tools.safety build` fails here.
    from avatario_tools.safety.corpus import corpus_hash, generate

    examples = generate()
    assert corpus_hash(examples) == META["corpus"]["sha256"]
    assert corpus_hash(generate()) == corpus_hash(examples)  # deterministic


def test_load_and_score():
    clf = Classifier.load()
    s = clf.scores("my toddler drank some bleach from under the sink")
    assert set(s) == {"abuse", "crisis", "medical_emergency", "medication_dosing"}
    assert all(0.0 <= v <= 1.0 for v in s.values()) and sum(s.values()) <= 1.0 + 1e-5
    assert max(s, key=s.get) == "medical_emergency"
    assert clf.scores("") == {c: 0.0 for c in s}
    assert clf.scores("   \u200b ") == {c: 0.0 for c in s}


def test_decide_reads_total_harm_against_the_top_category():
    t = {c: Thresholds(0.6, 0.3) for c in ("crisis", "abuse")}
    assert decide({"crisis": 0.7, "abuse": 0.1}, t) == ("crisis", None)
    assert decide({"crisis": 0.3, "abuse": 0.31}, t) == ("abuse", None)
    assert decide({"crisis": 0.2, "abuse": 0.15}, t) == (None, "crisis")
    assert decide({"crisis": 0.1, "abuse": 0.1}, t) == (None, None)
    assert decide({}, t) == (None, None)


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / COEF_NAME).unlink(), "cannot read"),
    (lambda d: (d / META_NAME).unlink(), "cannot read"),
    (lambda d: (d / META_NAME).write_text("{not json"), "cannot read"),
    (lambda d: (d / COEF_NAME).write_bytes(b"PK\x03\x04garbage"), "does not match"),
])
def test_a_damaged_model_stops_the_node_at_start(tmp_path, damage, words):
    d = tmp_path / "model"
    shutil.copytree(MODEL_DIR, d)
    damage(d)
    with pytest.raises(ConfigError, match=words):
        Classifier.load(d)
    settings = InferenceSettings(internal_token="t" * 32, model_path=tmp_path / "x.pth",
                                 safety_classifier_dir=d)
    with pytest.raises(ConfigError):
        build_guard(settings)


def test_the_node_loads_the_classifier_at_start(tmp_path):
    settings = InferenceSettings(internal_token="t" * 32, model_path=tmp_path / "x.pth")
    guard = build_guard(settings)
    assert guard.classifier is not None
    assert guard.thresholds == Classifier.load().thresholds
    off = build_guard(InferenceSettings(internal_token="t" * 32, model_path=tmp_path / "x.pth",
                                        safety_classifier=False))
    assert off.classifier is None


@pytest.mark.slow
@pytest.mark.skipif(not SAME_LIBRARIES, reason="the committed model was built with other "
                    f"library versions: {META['libraries']}")
def test_the_build_is_byte_identical_to_the_committed_model(tmp_path):
    from avatario_tools.safety.train import build

    build(tmp_path, log=lambda *_: None)
    for name in (COEF_NAME, META_NAME):
        assert (tmp_path / name).read_bytes() == (MODEL_DIR / name).read_bytes(), name
