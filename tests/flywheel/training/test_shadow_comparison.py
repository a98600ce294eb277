"""GET .../models/{name}/shadow/: champion against a shadow model on live traffic, from
human labels (docs/api.md: Shadow mode)."""

import pytest

from flywheel.models import Prediction, Project
from flywheel.training.live import accuracy_difference
from labeling.models import Label
from tests.factories import prediction

N = 200


def truth(i):
    """The champion (label i % 10) is right below 60, wrong from there on."""
    return str(i % 10) if i < 60 else str((i + 1) % 10)


def shadow_label(i):
    """The shadow agrees on even ids and answers (i + 1) % 10 on odd ones."""
    return str(i % 10) if i % 2 == 0 else str((i + 1) % 10)


def live_traffic(client, project, n=N, *, label=True, slices=()):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "daily_budget": 100_000},
                                                 slices=list(slices))
    items = [prediction(i, confidence=0.95, metadata={"region": "eu" if i % 4 < 2 else "us"}) for i in range(n)]
    assert client.post("/api/v1/projects/digits/predictions/", {"predictions": items},
                       format="json").status_code == 201
    shadows = [{"prediction_id": f"p-{i}", "model_version": "rc-1", "label": shadow_label(i), "confidence": 0.9}
               for i in range(n)]
    assert client.post("/api/v1/projects/digits/shadow-predictions/", {"shadow_predictions": shadows},
                       format="json").status_code == 201
    # The audit sample: every fifth prediction (made so here; ingestion draws it at random).
    Prediction.objects.filter(project=project, external_id__in=[f"p-{i}" for i in range(0, n, 5)]).update(audit=True)
    if label:
        pks = dict(Prediction.objects.filter(project=project).values_list("external_id", "id"))
        wanted = sorted({i for i in range(n) if i % 2 or i % 5 == 0})
        Label.objects.bulk_create([Label(project=project, prediction_id=pks[f"p-{i}"], label=truth(i),
                                         source="annotation") for i in wanted])


def test_the_comparison_from_audit_labels_and_labeled_disagreements(app_client, ops_client, project):
    live_traffic(app_client, project, slices=["region"])
    response = ops_client.get("/api/v1/projects/digits/models/rc-1/shadow/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["model"], body["champion"], body["paired"]) == ("rc-1", "v1", N)
    assert body["agreement"] == 0.5
    audited = range(0, N, 5)
    assert body["labeled"] == {"audit": len(audited), "disagreement": N // 2}
    champion_right = sum(str(i % 10) == truth(i) for i in audited)
    challenger_right = sum(shadow_label(i) == truth(i) for i in audited)
    assert body["accuracy"]["champion"]["value"] == pytest.approx(champion_right / len(audited))
    assert body["accuracy"]["challenger"]["value"] == pytest.approx(challenger_right / len(audited))
    assert body["accuracy"]["champion"]["low"] < body["accuracy"]["champion"]["value"]
    # Every disagreement was drawn (rate 1) and labeled: the difference is the plain mean.
    outcomes = [(int(shadow_label(i) == truth(i)) - int(str(i % 10) == truth(i)), 1.0) for i in range(1, N, 2)]
    expected = accuracy_difference(paired=N, labeled=outcomes)
    assert body["difference"]["value"] == pytest.approx(40 / N) == pytest.approx(expected.value)
    assert body["difference"]["low"] == pytest.approx(expected.low)
    assert body["p_value"] == pytest.approx(expected.p_value)
    assert body["verdict"] == "better" and body["reasons"]
    assert {(s["key"], s["value"]) for s in body["slices"]} == {("region", "eu"), ("region", "us")}
    assert sum(s["paired"] for s in body["slices"]) == N and sum(s["labeled"] for s in body["slices"]) == N // 2


def test_labels_that_are_half_in_count_twice(app_client, ops_client, project):
    """Half the drawn disagreements labeled: each label stands for two."""
    live_traffic(app_client, project, label=False)
    pks = dict(Prediction.objects.filter(project=project).values_list("external_id", "id"))
    labeled = range(1, N, 4)
    Label.objects.bulk_create([Label(project=project, prediction_id=pks[f"p-{i}"], label=truth(i),
                                     source="annotation") for i in labeled])
    body = ops_client.get("/api/v1/projects/digits/models/rc-1/shadow/").json()
    assert body["labeled"]["disagreement"] == len(labeled)
    outcomes = [(int(shadow_label(i) == truth(i)) - int(str(i % 10) == truth(i)), 0.5) for i in labeled]
    assert body["difference"]["value"] == pytest.approx(accuracy_difference(paired=N, labeled=outcomes).value)
    assert body["verdict"] == "undecided"  # 50 labels of the 100 the live gate needs


def test_feedback_labels_do_not_count(app_client, ops_client, project):
    live_traffic(app_client, project, label=False)
    pks = dict(Prediction.objects.filter(project=project).values_list("external_id", "id"))
    Label.objects.bulk_create([Label(project=project, prediction_id=pks[f"p-{i}"], label=truth(i),
                                     source="feedback") for i in range(N)])
    body = ops_client.get("/api/v1/projects/digits/models/rc-1/shadow/").json()
    assert body["labeled"] == {"audit": 0, "disagreement": 0} and body["difference"]["value"] is None


def test_a_model_without_shadow_answers_has_nothing_paired(app_client, ops_client, project):
    assert app_client.post("/api/v1/projects/digits/predictions/", prediction(0), format="json").status_code == 201
    body = ops_client.get("/api/v1/projects/digits/models/v1/shadow/").json()
    assert body["paired"] == 0 and body["agreement"] is None and body["verdict"] == "undecided"
    assert ops_client.get("/api/v1/projects/digits/models/nope/shadow/").status_code == 404


def test_the_comparison_costs_a_fixed_number_of_queries(app_client, ops_client, project,
                                                        django_assert_max_num_queries):
    live_traffic(app_client, project, n=20, slices=["region"])
    with django_assert_max_num_queries(20) as small:
        assert ops_client.get("/api/v1/projects/digits/models/rc-1/shadow/").status_code == 200
    small_count = len(small.captured_queries)
    assert small_count > 3
    Prediction.objects.all().delete()
    live_traffic(app_client, project, n=N, slices=["region"])
    with django_assert_max_num_queries(small_count):
        assert ops_client.get("/api/v1/projects/digits/models/rc-1/shadow/").json()["paired"] == N


def test_the_live_gate_is_a_checked_retraining_policy(ops_client, project):
    url = "/api/v1/projects/digits/"
    body = ops_client.get(url).json()
    assert body["retraining"]["live_gate"] == {"enabled": False, "min_labels": 100, "min_improvement": 0.0}
    response = ops_client.patch(url, {"retraining": {"live_gate": {"enabeld": True}}}, format="json")
    assert response.status_code == 400
    assert "enabled" in response.json()["error"]["fields"]["retraining.live_gate.enabeld"][0]
    response = ops_client.patch(url, {"retraining": {"live_gate": {"min_labels": 0}}}, format="json")
    assert response.status_code == 400 and "retraining.live_gate.min_labels" in response.json()["error"]["fields"]
    assert ops_client.patch(url, {"retraining": {"live_gate": {"enabled": True}}}, format="json").status_code == 200
    response = ops_client.patch(url, {"retraining": {"live_gate": {"min_labels": 40}}}, format="json")
    assert response.json()["retraining"]["live_gate"] == {"enabled": True, "min_labels": 40, "min_improvement": 0.0}


def test_the_ops_dashboard_shows_champion_against_challenger(app_client, client, project):
    import json

    from accounts.models import Role
    from tests import factories

    live_traffic(app_client, project)
    user, _ = factories.user_with_role(Role.OPS, project, password="correct-horse-battery-staple")
    assert client.login(username=user.username, password="correct-horse-battery-staple")
    html = client.get("/ops/digits/").content.decode()
    data = json.loads(html.split('id="ops-data" type="application/json">')[1].split("</script>")[0])
    assert {p["key"]: p["kind"] for p in data["panels"]}["shadow"] == "table"  # drawn on the server
    table = html[html.index("Champion against challenger, live"):]
    table = table[:table.index("</table>")]
    for cell in ("rc-1", "v1", "logged by the app", "50.0%", "+20.0% (", "40 / 100", "better"):
        assert f"<td>{cell}" in table or cell in table, cell
