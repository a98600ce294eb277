"""flywheel.routing: uncertainty scores, audit draws, routing decisions (pure, no database)."""

import math

import pytest

from flywheel.ingest import routing
from flywheel.ingest.routing import Reason, RoutingPolicy


def test_least_confidence_is_one_minus_top_probability():
    assert routing.uncertainty(0.7, None, 10).least_confidence == pytest.approx(0.3)
    assert routing.uncertainty(0.0, {"a": 0.7, "b": 0.3}, 2).least_confidence == pytest.approx(0.3)


def test_margin_uses_the_runner_up_from_probabilities():
    scores = routing.uncertainty(0.41, {"7": 0.41, "1": 0.38, "9": 0.21}, 10)
    assert scores.margin == pytest.approx(1 - (0.41 - 0.38))


def test_margin_without_probabilities_assumes_one_runner_up_takes_the_rest():
    assert routing.uncertainty(0.8, None, 10).margin == pytest.approx(1 - (0.8 - 0.2))
    # Below one half, the runner-up can tie the top label: as uncertain as it gets.
    assert routing.uncertainty(0.4, None, 10).margin == pytest.approx(1.0)


def test_entropy_is_normalized_by_the_number_of_labels():
    uniform = {str(i): 0.25 for i in range(4)}
    assert routing.uncertainty(0.25, uniform, 4).entropy == pytest.approx(1.0)
    assert routing.uncertainty(1.0, {"a": 1.0}, 4).entropy == pytest.approx(0.0)
    p = [0.5, 0.25, 0.25]
    expected = -sum(x * math.log(x) for x in p) / math.log(3)
    assert routing.uncertainty(0.5, dict(zip("abc", p, strict=True)), 3).entropy == pytest.approx(expected)


def test_entropy_without_probabilities_spreads_the_rest_evenly():
    expected = -(0.6 * math.log(0.6) + 0.4 * math.log(0.1)) / math.log(5)
    assert routing.uncertainty(0.6, None, 5).entropy == pytest.approx(expected)


def test_audit_draw_is_stable_uniform_and_keyed_by_the_salt():
    draws = [routing.audit_draw("salt", f"id-{i}") for i in range(20_000)]
    assert draws == [routing.audit_draw("salt", f"id-{i}") for i in range(20_000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    assert 0.09 < sum(d < 0.1 for d in draws) / len(draws) < 0.11
    assert draws[:50] != [routing.audit_draw("other", f"id-{i}") for i in range(50)]


def test_route_batch_routes_audit_regardless_of_confidence_and_spends_budget_on_the_most_uncertain():
    policy = RoutingPolicy(threshold=0.3, audit_rate=0.05, daily_budget=2)
    scores = [0.9, 0.1, 0.5, 0.7, 0.35, 0.0]
    draws = [0.5, 0.01, 0.5, 0.5, 0.5, 0.5]  # the confident second one is audited
    assert routing.budget_request(scores, draws, policy) == 4
    decisions = routing.route_batch(scores, draws, policy, budget_granted=2)
    assert [d.reason for d in decisions] == [
        Reason.LOW_CONFIDENCE, Reason.AUDIT, Reason.BUDGET_EXHAUSTED, Reason.LOW_CONFIDENCE,
        Reason.BUDGET_EXHAUSTED, Reason.CONFIDENT,
    ]
    assert [d.routed for d in decisions] == [True, True, False, True, False, False]
    assert decisions[0].priority > decisions[3].priority  # more uncertain first
    assert decisions[1].priority > decisions[0].priority  # audit ahead of uncertainty routing


def test_policy_from_partial_dict_keeps_defaults_and_ignores_unknown_keys():
    policy = RoutingPolicy.from_dict({"threshold": 0.5, "unknown": 1})
    assert policy.threshold == 0.5 and policy.audit_rate == RoutingPolicy().audit_rate
