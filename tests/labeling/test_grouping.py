"""The clustering behind group labeling, alone: no database (labeling/grouping.py)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from labeling import grouping


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    raws = [np.asarray(row, dtype="<f4").tobytes() for row in data.data[:600]]
    return grouping.embedding_matrix(raws), data.target[:600]


def test_groups_respect_the_sizes_and_keep_digits_apart(digits):
    vectors, truth = digits
    formed = grouping.groups_form(vectors, min_size=3, max_size=12, target_size=10)
    sizes = [len(f.members) for f in formed]
    assert min(sizes) >= 3 and max(sizes) <= 12
    members = [m for f in formed for m in f.members]
    assert len(members) == len(set(members))  # a row is in one group at most
    assert grouping.purity([f.members for f in formed], truth) > 0.95


def test_members_come_least_typical_first(digits):
    vectors, _ = digits
    for formed in grouping.groups_form(vectors, min_size=3, max_size=50, target_size=20):
        assert formed.distances == sorted(formed.distances, reverse=True)


def test_too_few_rows_make_no_group():
    assert grouping.groups_form(np.eye(2), min_size=3, max_size=50, target_size=20) == []


def test_features_are_scaled_by_declared_ranges_and_categories_one_hot():
    schema = [{"name": "big", "type": "numeric", "min": 0, "max": 1000}, {"name": "small", "type": "numeric"},
              {"name": "color", "type": "categorical"}]
    rows = [{"big": 500, "small": 2.0, "color": "red"}, {"big": None, "small": 4.0, "color": "blue"}]
    matrix = grouping.feature_matrix(rows, schema)
    assert matrix.tolist() == [[0.5, 0.0, 0.0, 1.0], [0.5, 1.0, 1.0, 0.0]]


def test_embeddings_round_trip_as_float32_and_compare_by_direction():
    raw = np.asarray([3.0, 4.0], dtype="<f4").tobytes()
    assert grouping.embedding_vector(raw).tolist() == [3.0, 4.0]
    twice = np.asarray([6.0, 8.0], dtype="<f4").tobytes()
    matrix = grouping.embedding_matrix([raw, twice])
    assert np.allclose(matrix[0], matrix[1])


def test_split_cuts_two_clusters_apart_and_nearest_orders_by_distance():
    vectors = np.vstack([[0, 0], [0, 0.1], [0.1, 0], [5, 5], [5, 5.1], [5.1, 5]])
    a, b = grouping.split_in_two(vectors)
    assert {frozenset(a.members), frozenset(b.members)} == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}
    found = grouping.nearest(vectors, np.array([0.0, 0.0]), 3)
    assert [i for i, _ in found] == [0, 1, 2] or [i for i, _ in found] == [0, 2, 1]
    assert [d for _, d in found] == sorted(d for _, d in found)


def test_groups_split_where_the_model_disagrees_so_each_holds_one_predicted_label(digits):
    vectors, truth = digits
    # A model that is wrong on every fifth digit: its label says which members the content
    # alone would have kept together with digits they are not.
    predicted = [str((t + 1) % 10) if i % 5 == 0 else str(t) for i, t in enumerate(truth)]
    formed = grouping.groups_form(vectors, min_size=3, max_size=50, target_size=20, predicted=predicted)
    assert formed
    for group in formed:
        assert len({predicted[i] for i in group.members}) == 1
        assert len(group.members) >= 3
        assert group.distances == sorted(group.distances, reverse=True)
    content_only = grouping.groups_form(vectors, min_size=3, max_size=50, target_size=20)
    assert any(len({predicted[i] for i in g.members}) > 1 for g in content_only)


def test_a_split_part_under_min_size_stays_ungrouped():
    vectors = np.vstack([[0, 0], [0, 0.1], [0.1, 0], [0.1, 0.1], [0.05, 0.05]])
    formed = grouping.groups_form(vectors, min_size=3, max_size=50, target_size=5,
                                  predicted=["a", "a", "a", "b", "b"])
    assert [sorted(f.members) for f in formed] == [[0, 1, 2]]
