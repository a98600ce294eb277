"""flywheel.evaluation (metrics and the gate) and the built-in trainer, without Django."""

import numpy as np
import pytest

from flywheel.training.evaluation import GatePolicy, gate, majority_baseline, mcnemar_p, metrics
from flywheel.training.trainers import SklearnTrainer, TrainingData, load_model


def test_metrics_by_hand():
    truth = ["a", "a", "b", "b", "c"]
    predicted = ["a", "b", "b", "b", "a"]
    m = metrics(truth, predicted, confidence=[0.9, 0.6, 0.8, 0.7, 0.5], slices={"r": ["x", "x", "y", "y", "y"]})
    assert m["accuracy"] == pytest.approx(0.6)
    # F1: a = 2*1/(2+1+1) = .5, b = 2*2/(4+1+0) = .8, c = 0 -> macro .4333
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["recall"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert m["slices"]["r"]["x"]["accuracy"] == 0.5 and m["slices"]["r"]["y"]["n"] == 3
    assert 0 <= m["ece"] <= 1


def test_mcnemar():
    truth = ["a"] * 40
    better = ["a"] * 35 + ["b"] * 5
    worse = ["a"] * 20 + ["b"] * 20
    assert mcnemar_p(truth, better, worse) < 0.001
    assert mcnemar_p(truth, worse, better) > 0.99
    assert mcnemar_p(truth, better, better) == 1.0


def test_gate_refuses_a_worse_candidate_with_reasons_and_passes_a_better_one():
    rng = np.random.default_rng(0)
    truth = [str(x) for x in rng.integers(0, 3, 600)]
    region = ["eu" if i % 2 else "us" for i in range(600)]
    def noisy(rate):
        return [t if rng.random() > rate else str((int(t) + 1) % 3) for t in truth]
    champion, better, worse = noisy(0.3), noisy(0.1), noisy(0.45)
    baseline = majority_baseline(truth, len(truth))
    policy = GatePolicy(min_slice_size=50)
    ok = gate(truth=truth, candidate=better, champion=champion, baseline=baseline, slices={"region": region},
              policy=policy)
    assert ok.passed and any("beats the champion" in r for r in ok.reasons)
    refused = gate(truth=truth, candidate=worse, champion=champion, baseline=baseline, slices={"region": region},
                   policy=policy)
    assert not refused.passed
    assert any("does not beat the champion" in r for r in refused.reasons)
    assert any("falls behind the champion on region=" in r for r in refused.reasons)
    first = gate(truth=truth, candidate=better, champion=None, baseline=baseline, slices={}, policy=policy)
    assert first.passed and "no champion to compare with" in first.reasons
    trivial = gate(truth=truth, candidate=baseline, champion=None, baseline=baseline, slices={}, policy=policy)
    assert not trivial.passed and "baseline" in trivial.reasons[0]


def test_a_slice_that_regresses_fails_the_gate_even_when_the_total_improves():
    truth = ["a"] * 200 + ["b"] * 200
    region = ["eu"] * 200 + ["us"] * 200
    champion = ["a"] * 150 + ["b"] * 50 + ["a"] * 100 + ["b"] * 100   # eu 75%, us 50%
    candidate = ["a"] * 120 + ["b"] * 80 + ["b"] * 200                # eu 60%, us 100%
    decision = gate(truth=truth, candidate=candidate, champion=champion, baseline=["a"] * 400,
                    slices={"region": region}, policy=GatePolicy(primary_metric="accuracy"))
    assert not decision.passed and any("region=eu" in r for r in decision.reasons)


def test_the_sklearn_trainer_learns_weights_rows_and_round_trips_its_artifact():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data[:600], digits.target[:600].astype(str)
    data = TrainingData(numeric=x, categorical=np.empty((600, 0), dtype=object), labels=y, weights=np.ones(600))
    model, artifact = SklearnTrainer().train(data)
    labels, confidence = model.predict(digits.data[600:900], np.empty((300, 0), dtype=object))
    assert np.mean(np.array(labels) == digits.target[600:900].astype(str)) > 0.9
    assert confidence.min() > 0 and artifact.libraries["scikit-learn"]
    loaded = load_model(artifact.content, sha256=artifact.sha256)
    assert loaded.predict(digits.data[600:610], np.empty((10, 0), dtype=object))[0] == labels[:10]
    with pytest.raises(ValueError, match="SHA-256"):
        load_model(artifact.content + b"x", sha256=artifact.sha256)


def test_the_trainer_handles_categorical_features_and_missing_values():
    numeric = np.array([[1.0], [np.nan], [3.0], [4.0]] * 10)
    categorical = np.array([["red"], ["blue"], [None], ["red"]] * 10, dtype=object)
    labels = np.array(["x", "y", "x", "y"] * 10)
    model, _ = SklearnTrainer().train(TrainingData(numeric, categorical, labels, np.ones(40)))
    predicted, _ = model.predict(np.array([[2.0]]), np.array([["green"]], dtype=object))
    assert predicted[0] in {"x", "y"}
    with pytest.raises(ValueError, match="two different labels"):
        SklearnTrainer().train(TrainingData(numeric[:2], categorical[:2], np.array(["x", "x"]), np.ones(2)))


def test_range_scaling_takes_declared_ranges_and_max_abs_for_the_rest():
    from flywheel.training.scaling import RangeScaler

    rng = np.random.default_rng(0)
    numeric = np.column_stack([rng.uniform(0, 4, 60), rng.uniform(-8, 8, 60), rng.uniform(2, 6, 60)])
    labels = np.where(numeric[:, 0] > 2, "high", "low")
    trainer = SklearnTrainer()
    trainer.feature_scaling = "range"
    data = TrainingData(numeric, np.empty((60, 0), dtype=object), labels, np.ones(60),
                        numeric_ranges=[(0.0, 16.0), None, (2.0, 10.0)])
    model, artifact = trainer.train(data)
    scaler = model.estimator.named_steps["features"].named_transformers_["numeric"].named_steps["scale"]
    assert isinstance(scaler, RangeScaler)
    # Declared: by the range, however far the rows reach into it. Undeclared: by the rows.
    assert scaler.offset_.tolist() == [0.0, 0.0, 2.0]
    assert scaler.scale_[0] == 16.0 and scaler.scale_[2] == 8.0
    assert scaler.scale_[1] == pytest.approx(np.abs(numeric[:, 1]).max())
    assert scaler.transform([[16.0, 0.0, 10.0]]).tolist() == [[1.0, 0.0, 1.0]]
    loaded = load_model(artifact.content, sha256=artifact.sha256)
    assert loaded.predict(numeric[:5], np.empty((5, 0), dtype=object))[0] == model.predict(
        numeric[:5], np.empty((5, 0), dtype=object))[0]


def test_a_declared_range_keeps_the_scale_whatever_rows_were_labeled():
    from flywheel.training.scaling import RangeScaler

    clean = np.zeros((20, 2))
    clean[:, 1] = np.linspace(0, 1, 20)
    odd = np.vstack([clean, [[6.0, 1.0]]])  # one noisy digit lights a border pixel
    declared = [(0.0, 16.0), (0.0, 16.0)]
    assert RangeScaler(declared).fit(clean).scale_.tolist() == RangeScaler(declared).fit(odd).scale_.tolist()
    # Learned from the rows, the border pixel's scale is whatever the odd row made it.
    assert RangeScaler().fit(clean).scale_[0] == 1.0 and RangeScaler().fit(odd).scale_[0] == 6.0
    with pytest.raises(ValueError, match="2 ranges for 3 numeric features"):
        RangeScaler(declared).fit(np.zeros((4, 3)))
