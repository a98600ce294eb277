"""labeling.agreement against values computed by hand."""

import pytest

from labeling.agreement import alpha_per_label, cohen_kappa, krippendorff_alpha, pairwise_kappa


def test_cohen_kappa_two_by_two():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15.
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2 / 0.5
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_perfect_chance_and_undefined():
    assert cohen_kappa(list("abcabc"), list("abcabc")) == pytest.approx(1.0)
    # Disagreeing on every item, with the same label frequencies: below chance.
    assert cohen_kappa(list("abab"), list("baba")) == pytest.approx(-1.0)
    assert cohen_kappa(list("aaaa"), list("aaaa")) is None
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_krippendorff_alpha_reference_example():
    # Krippendorff's worked example (four observers, twelve units, nominal data, with
    # missing values): alpha = 0.743.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[row[u] for row in observers if row[u] is not None] for u in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_small_case_by_hand():
    # Units: (a,a) (a,b) (b,b). Coincidences: o_aa=2, o_ab=o_ba=1, o_bb=2; n_a=n_b=3, n=6.
    # D_o = 2/6; D_e = 2*3*3/(6*5) = 0.6; alpha = 1 - (1/3)/0.6 = 4/9.
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(4 / 9)
    assert krippendorff_alpha([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["a"], ["a", "a"]]) is None  # one value only: nothing to compare
    assert krippendorff_alpha([["a"]]) is None


def test_alpha_per_label_and_pairwise_kappa():
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["c", "c"]]
    per_label = alpha_per_label(units, ["a", "b", "c"])
    assert per_label["c"] == pytest.approx(1.0)
    assert per_label["a"] < 1.0 and per_label["b"] < 1.0
    pairs = pairwise_kappa({"ann": {1: "a", 2: "a", 3: "b"}, "bob": {1: "a", 2: "b", 3: "b"}, "cy": {9: "a"}})
    assert list(pairs) == [("ann", "bob")]
    assert pairs[("ann", "bob")]["items"] == 3
    # p_o = 2/3; p_e = (2/3*1/3) + (1/3*2/3) = 4/9; kappa = (2/3-4/9)/(5/9) = 0.4
    assert pairs[("ann", "bob")]["kappa"] == pytest.approx(0.4)


def test_cohen_kappa_is_scikit_learns():
    import random

    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(5)
    for _ in range(100):
        labels = [str(i) for i in range(rng.randint(2, 8))]
        first = [rng.choice(labels) for _ in range(rng.randint(2, 200))]
        second = [label if rng.random() < 0.7 else rng.choice(labels) for label in first]
        if len(set(first) | set(second)) > 1:
            assert cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second), abs=1e-12)
