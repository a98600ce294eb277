"""flywheel_simulate on a team's own data (--data FILE) and with grouping on: the file is
read and refused clearly, and a small run labels groups through the service's group
endpoints and writes the same figures as the digits run."""

import json
from dataclasses import fields

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from labeling.models import Annotation, Group, GroupStatus, Task, TaskReason
from sim.simulation import (
    AnnotatorTime,
    Dataset,
    RoundResult,
    SimulationResult,
    _member_ids,
    compare_grouping,
)


def _blobs(rows: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes in four features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, rows)
    centres = np.array([[0, 0, 0, 0], [6, 6, 0, 0], [0, 6, 6, 6]], dtype=float)
    return centres[y] + rng.normal(0, 1, (rows, 4)), np.array(["cat", "dog", "owl"])[y]


def _csv(path, header: str, rows: list[str]):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# --- Reading the file ---------------------------------------------------------------------------


def test_a_csv_gives_its_features_their_ranges_and_its_labels(tmp_path):
    path = _csv(tmp_path / "d.csv", "width,height,kind", ["1.5,10,a", "2.5,30,b", "0.5,20,a"])
    data = Dataset.from_file(path, label_column="kind")
    assert data.features == ["width", "height"]
    assert data.labels == ["a", "b"]
    assert data.low.tolist() == [0.5, 10] and data.high.tolist() == [2.5, 30]
    assert data.x.shape == (3, 2) and data.y.tolist() == ["a", "b", "a"]


def test_a_parquet_file_reads_the_same(tmp_path):
    x, y = _blobs(30)
    table = pa.table({"f0": x[:, 0], "f1": x[:, 1].astype(np.float32), "n": np.arange(30), "label": y})
    pq.write_table(table, tmp_path / "d.parquet")
    data = Dataset.from_file(tmp_path / "d.parquet")
    assert data.features == ["f0", "f1", "n"] and set(data.labels) <= {"cat", "dog", "owl"}
    assert data.high[2] == 29 and np.allclose(data.x[:, 0], x[:, 0])


@pytest.mark.parametrize(("header", "rows", "options", "message"), [
    ("a,b,label", ["1,2,x", "2,3,y"], {"label_column": "kind"}, "no label column 'kind'"),
    ("a,b,label", ["1,2,x", "2,oops,y"], {}, "column 'b' is not numeric (row 2: 'oops')"),
    ("a,b,label", ["1,2,x", "2,,y"], {}, "row 2: column 'b' is empty"),
    ("a,b,label", ["1,2,x", "2,3,"], {}, "row 2: column 'label' has no label"),
    ("a,b c,label", ["1,2,x", "2,3,y"], {}, "column 'b c': a feature name"),
    ("a,b,label", ["1,2,x", "2,3,x"], {}, "fewer than two labels"),
    ("label", ["x", "y"], {}, "no feature columns"),
])
def test_a_bad_file_is_refused_naming_the_column_or_row(tmp_path, header, rows, options, message):
    path = _csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(CommandError) as refused:
        call_command("flywheel_simulate", data=str(path), plot=str(tmp_path / "s.png"), **options)
    assert message in str(refused.value)


def test_a_missing_or_unreadable_file_is_refused(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("flywheel_simulate", data=str(tmp_path / "none.csv"), plot=str(tmp_path / "s.png"))
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(CommandError, match="not a readable Parquet file"):
        call_command("flywheel_simulate", data=str(tmp_path / "x.parquet"), plot=str(tmp_path / "s.png"))


def test_too_few_rows_for_the_splits_is_refused(tmp_path):
    x, y = _blobs(50)
    path = tmp_path / "small.csv"
    lines = [f"{','.join(map(str, row))},{label}" for row, label in zip(x, y, strict=True)]
    path.write_text("a,b,c,d,label\n" + "\n".join(lines))
    with pytest.raises(CommandError, match="50 rows are too few"):
        call_command("flywheel_simulate", data=str(path), plot=str(tmp_path / "s.png"), quiet=True)


def test_grouping_on_with_random_routing_alone_is_refused(tmp_path):
    with pytest.raises(CommandError, match="--grouping on needs uncertainty routing"):
        call_command("flywheel_simulate", grouping="on", strategy="random", plot=str(tmp_path / "s.png"))


# --- The time model and the comparison ----------------------------------------------------------


def test_a_group_costs_a_glance_plus_a_look_at_each_member():
    time = AnnotatorTime()
    assert time.single_task_s == 3.0
    assert time.group_cost(10) == pytest.approx(8.0)  # 10 items in 8 s, against 30 s one by one
    assert time.group_cost(20) == pytest.approx(12.0)


def test_a_refused_group_label_names_the_members_to_take_out():
    assert _member_ids(["Ruled out for members [3, 17]."]) == [3, 17]


def _round(number, seconds, items, *, group=None, estimate=None, single=None, accuracy=0.9):
    return RoundResult(round=number, labels=items, true_accuracy=accuracy, estimate=None, low=None, high=None,
                       drifted=None, drifted_fields=0, champion="", promoted=False, shifted=False,
                       annotator_seconds=seconds, items_labeled=items, group_label_accuracy=group,
                       group_label_estimate=estimate, single_label_accuracy=single)


def test_grouping_is_compared_per_annotator_minute_and_by_the_checks_coverage():
    off = SimulationResult("uncertainty", "p", [_round(1, 60, 20, single=0.95), _round(2, 120, 40, single=0.96)])
    on = SimulationResult("uncertainty", "q", [
        _round(1, 60, 70, group=0.94, estimate={"accuracy": 0.9, "low": 0.8, "high": 0.97, "n": 7}),
        _round(2, 120, 140, group=0.93, estimate={"accuracy": 0.99, "low": 0.95, "high": 1.0, "n": 14},
               accuracy=0.92)], grouping=True)
    c = compare_grouping(off, on)
    assert c["items_per_minute_off"] == 20 and c["items_per_minute_on"] == 70 and c["speedup"] == 3.5
    assert c["group_label_accuracy_gap"] == pytest.approx(0.03)
    # The first round's interval holds the truth (0.94); the second's (0.95-1.0) misses 0.93.
    assert (c["rounds_interval_held"], c["rounds_with_estimate"]) == (1, 2)
    assert c["final_accuracy_on"] == 0.92 and c["final_accuracy_off"] == 0.9


# --- A run on a file, grouping on and off -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_small_run_on_a_csv_labels_groups_through_the_service_and_writes_the_digits_fields(tmp_path):
    x, y = _blobs(240)
    path = tmp_path / "blobs.csv"
    path.write_text("f0,f1,f2,f3,animal\n" + "\n".join(
        f"{','.join(f'{v:.4f}' for v in row)},{label}" for row, label in zip(x, y, strict=True)))
    plot = tmp_path / "sim.png"
    call_command("flywheel_simulate", data=str(path), label_column="animal", rounds=1, traffic=60,
                 labels_per_round=10, initial_labels=30, gold=30, test=40, strategy="uncertainty", grouping="both",
                 group_check_rate=0.5, plot=str(plot), quiet=True, verbosity=2)

    summary = json.loads(plot.with_suffix(".json").read_text())
    assert summary["config"]["data"] == str(path) and summary["config"]["grouping"] == "both"
    results = summary["runs"][0]["results"]
    assert [(r["strategy"], r["grouping"]) for r in results] == [("uncertainty", False), ("uncertainty", True)]
    # The same fields as the digits run: every round carries RoundResult's fields.
    assert all(set(r) == {f.name for f in fields(RoundResult)} for res in results for r in res["rounds"])
    off, on = (res["rounds"][-1] for res in results)
    # At most the same annotator time; off labels one task per 3 s (while the queue lasts); on
    # labels groups, so more items.
    assert off["annotator_seconds"] == 3.0 * off["items_labeled"] <= 30.0
    assert 0 < on["annotator_seconds"] <= 30.0 and on["group_items"] > 0
    assert on["items_labeled"] > off["items_labeled"]
    assert 0 <= on["group_label_accuracy"] <= 1
    comparison = summary["grouping_comparison"]
    assert comparison["speedup"] > 1 and comparison["items_labeled_on"] == on["items_labeled"]
    assert plot.with_name("sim-grouping.png").stat().st_size > 10_000

    # The groups went through the service: labeled once each, members' annotations carry the
    # group, and checks were queued for another annotator.
    project = on and results[1]["project"]
    done = Group.objects.filter(project__slug=project, status=GroupStatus.DONE)
    assert done.exists()
    grouped = Annotation.objects.filter(task__project__slug=project, group__isnull=False)
    assert grouped.count() == on["group_items"]
    truth = dict(zip([f"r1-{i}" for i in range(len(y))], y, strict=True))
    stored = list(grouped.values_list("label", "task__prediction__external_id", "group_id"))
    right = sum(label == truth[external_id] for label, external_id, _ in stored)
    assert on["group_label_accuracy"] == pytest.approx(right / len(stored))
    assert set(grouped.values_list("user__username", flat=True)) == {"sim-annotator"}
    checks = Annotation.objects.filter(task__project__slug=project, task__reason=TaskReason.GROUP_CHECK)
    assert set(checks.values_list("user__username", flat=True)) <= {"sim-checker"}
    # Where the time went adds up: the groups labeled, their members, and the seconds on
    # groups, checks, members taken out and other single tasks make the annotator time.
    work = on["group_work"]
    assert off["group_work"] is None and work["groups"] == done.count()
    assert work["group_members"] == on["group_items"] + grouped_out(project)
    assert work["misfits_missed"] <= work["misfits"] and work["slipped_members"] <= on["group_items"]
    spent = sum(work.get(f"{kind}_seconds", 0) for kind in ("group", "check", "returned", "single"))
    assert spent == pytest.approx(on["annotator_seconds"])
    assert work.get("check_seconds", 0) == 3.0 * checks.count()


@pytest.mark.django_db(transaction=True)
def test_each_round_reports_the_label_free_estimate_beside_the_audit_estimate_and_the_truth(tmp_path, capsys):
    # Random routing labels only the audit sample: 40 audit labels of the first champion,
    # past the 30 the label-free estimate needs to calibrate on.
    x, y = _blobs(300, seed=3)
    path = tmp_path / "blobs.csv"
    path.write_text("f0,f1,f2,f3,animal\n" + "\n".join(
        f"{','.join(f'{v:.4f}' for v in row)},{label}" for row, label in zip(x, y, strict=True)))
    plot = tmp_path / "sim.png"
    call_command("flywheel_simulate", data=str(path), label_column="animal", rounds=1, traffic=60,
                 labels_per_round=40, initial_labels=30, gold=30, test=40, strategy="random", plot=str(plot),
                 verbosity=2)

    (result,) = json.loads(plot.with_suffix(".json").read_text())["runs"][0]["results"]
    (row,) = result["rounds"]
    assert 0 <= row["true_accuracy"] <= 1 and row["low"] <= row["estimate"] <= row["high"]
    free = row["label_free"]
    assert set(free) == {"value", "low", "high", "method", "consistent_with_audit", "calibration_labels",
                         "predictions"}
    assert free["method"] == "cbpe_isotonic" and free["calibration_labels"] >= 30
    assert free["low"] <= free["value"] <= free["high"] and isinstance(free["consistent_with_audit"], bool)
    # The printed table shows the three side by side.
    printed = capsys.readouterr().out
    assert "without labels (95%)" in printed and f"{free['value']:.3f} ({free['low']:.3f}-" in printed


def grouped_out(project):
    """Members annotators took out of the project's groups."""
    return Task.objects.filter(project__slug=project, grouping_excluded=True).count()
