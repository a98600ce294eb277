"""flywheel_simulate --shadow: each round's candidate goes into shadow through the service's
own paths (retraining.live_gate on, Flywheel scoring the traffic with it, disagreement
routing), the live gate promotes or retires it, and the figures count its labels to a
verdict and its wrong decisions, disagreement routing against the audit sample alone."""

import json
from dataclasses import fields

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditEvent
from flywheel.models import Disagreement, ShadowModel, ShadowPrediction, TrainingRun
from labeling.models import Task, TaskReason
from sim.simulation import RoundResult, ShadowDecision, shadow_figures


def _decision(verdict: str, ended: str, true_difference: float, labels: int = 30) -> ShadowDecision:
    return ShadowDecision(model="m", champion="c", started_round=1, decided_round=3, verdict=verdict, labels=labels,
                          labeled={"audit": 0, "disagreement": labels}, paired=300, difference={},
                          true_difference=true_difference, ended=ended)


def test_the_figures_count_wrong_decisions_against_the_truth():
    figures = shadow_figures([
        _decision("better", "promoted", -0.01, labels=20),  # truly worse, promoted: a wrong decision
        _decision("worse", "retired", 0.03, labels=40),  # truly better by 3 points, retired: held back
        _decision("undecided", "held_back", 0.025),  # better by 2.5 points, taken out undecided: held back
        _decision("undecided", "running", 0.05),  # still in shadow when the run ended: no verdict, not held back
        _decision("better", "promoted", 0.01),  # better by less than 2 points: neither figure
    ])
    assert figures["challengers"] == 5 and figures["verdicts"] == 3
    assert (figures["promoted"], figures["retired"], figures["held_back"], figures["undecided_at_end"]) == (2, 1, 1, 1)
    assert figures["worse_promoted"] == 1 and figures["truly_worse"] == 1
    assert figures["better_held_back"] == 2 and figures["truly_better_by_2_points"] == 3
    assert figures["better_undecided_at_end"] == 1
    assert figures["mean_labels_to_verdict"] == pytest.approx(30.0)  # verdicts only: 20, 40, 30
    assert figures["mean_rounds_to_verdict"] == 2.0
    assert shadow_figures([])["mean_labels_to_verdict"] is None


def test_shadow_mode_with_grouping_is_refused(tmp_path):
    with pytest.raises(CommandError, match="--shadow runs with grouping off"):
        call_command("flywheel_simulate", shadow=True, grouping="on", plot=str(tmp_path / "s.png"))


@pytest.mark.django_db(transaction=True)
def test_a_small_seeded_shadow_run_judges_candidates_on_live_traffic_through_the_service(tmp_path):
    plot = tmp_path / "shadow.png"
    call_command("flywheel_simulate", shadow=True, rounds=3, traffic=200, labels_per_round=60, initial_labels=40,
                 gold=100, test=200, live_min_labels=5, shadow_rounds=2, seed=0, plot=str(plot), quiet=True,
                 verbosity=2)

    summary = json.loads(plot.with_suffix(".json").read_text())
    assert summary["config"]["shadow"] is True and summary["config"]["live_min_labels"] == 5
    uncertainty, random = summary["runs"][0]["results"]
    assert (uncertainty["strategy"], random["strategy"]) == ("uncertainty", "random")
    decision_fields = {f.name for f in fields(ShadowDecision)}
    for result in (uncertainty, random):
        assert all(set(r) == {f.name for f in fields(RoundResult)} for r in result["rounds"])
        # Round 1's candidate went into shadow instead of to champion, and was followed to an end.
        assert result["shadow_decisions"] and result["shadow_decisions"][0]["started_round"] == 1
        assert not result["rounds"][0]["promoted"]
        for d in result["shadow_decisions"]:
            assert set(d) == decision_fields
            assert d["started_round"] < d["decided_round"] <= 3 or d["ended"] == "running"
            assert d["ended"] in ("promoted", "retired", "held_back", "running")
            assert d["verdict"] == {"promoted": "better", "retired": "worse"}.get(d["ended"], "undecided")
            assert -1 <= d["true_difference"] <= 1
            # A round's traffic was scored with it, unless it was trained in the last round.
            assert d["paired"] >= 100 or (d["ended"] == "running" and d["started_round"] == 3)
            if d["verdict"] != "undecided":
                # The gate decided on at least min_labels labeled disagreements.
                assert d["labeled"]["disagreement"] >= 5
    # The labels the verdict rested on: disagreements routed for it, or the audit sample alone.
    for d in uncertainty["shadow_decisions"]:
        assert d["labels"] == d["labeled"]["disagreement"]
    for d in random["shadow_decisions"]:
        assert d["labels"] == d["labeled"]["audit"] >= d["labeled"]["disagreement"]

    for figures in (summary["shadow_comparison"], summary["shadow_comparison_per_seed"][0]):
        assert set(figures) >= {"disagreement", "audit"}
        for arm in ("disagreement", "audit"):
            f = figures[arm]
            assert f["challengers"] == f["promoted"] + f["retired"] + f["held_back"] + f["undecided_at_end"]
            assert 0 <= f["worse_promoted"] <= f["truly_worse"] and 0 <= f["better_held_back"]
    # The live gate reached a verdict on live traffic in at least one of the runs.
    decided = [(result["project"], d) for result in (uncertainty, random) for d in result["shadow_decisions"]
               if d["ended"] in ("promoted", "retired")]
    assert decided

    # Through the service: Flywheel scored the traffic with the shadow; uncertainty routing
    # gave drawn disagreements tasks (reason `disagreement`, or the uncertainty task the
    # prediction already had), random routing none (its budget of 0), its disagreements
    # drawn all the same and labeled only where the audit sample fell.
    for result in (uncertainty, random):
        assert ShadowPrediction.objects.filter(project__slug=result["project"]).exists()
    drawn = Disagreement.objects.filter(project__slug=uncertainty["project"], drawn=True)
    assert drawn.exclude(task_id=None).exists()
    assert not Task.objects.filter(project__slug=random["project"], reason=TaskReason.DISAGREEMENT).exists()
    assert Disagreement.objects.filter(project__slug=random["project"], drawn=True).exists()
    # The live gate decided and said so, on the run and in the audit log; nothing stays in shadow.
    for project, d in decided:
        run = TrainingRun.objects.get(project__slug=project, model_version__name=d["model"])
        assert run.promoted == (d["ended"] == "promoted") and run.gate["live"]["verdict"] == d["verdict"]
        assert AuditEvent.objects.filter(project__slug=project, action="model.live_gate", target=d["model"]).exists()
    assert not ShadowModel.objects.filter(project__slug__in=[uncertainty["project"], random["project"]],
                                          state="active").exists()
