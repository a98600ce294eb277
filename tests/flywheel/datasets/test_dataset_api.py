"""The dataset API (docs/api.md: Datasets) and the dataset_pull command."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

from common.storage import get_storage
from flywheel.datasets import selectors as dataset_selectors
from flywheel.models import DatasetVersion
from tests import factories
from tests.flywheel.datasets.dataset_data import build, ingest, label

BASE = "/api/v1/projects/digits/datasets/"


@pytest.fixture
def labeled(project):
    ingest(project, range(60))
    label(project, range(50))
    return project


def test_post_makes_a_version_and_builds_it(ops_client, labeled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = ops_client.post(BASE, {"note": "weekly"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["version"] == 1 and body["status"] in ("building", "ready")
    detail = ops_client.get(f"{BASE}1/").json()
    assert detail["status"] == "ready" and detail["note"] == "weekly" and detail["parent"] is None
    assert detail["counts"]["rows"] == 50 and sum(detail["counts"]["by_label"].values()) == 50
    assert detail["counts"]["by_source"] == {"annotation": 50}
    assert set(detail["counts"]["by_split"]) == {"train", "validation", "test"}
    version = DatasetVersion.objects.get(number=1)
    assert detail["manifest_sha256"] == version.manifest_sha256 and detail["manifest_uri"].startswith("file://")
    assert {"version", "status", "parent", "manifest_uri", "manifest_sha256", "counts", "created_at"} <= set(detail)
    with django_capture_on_commit_callbacks(execute=True):
        second = ops_client.post(BASE, {}, format="json").json()
    assert second["version"] == 2 and ops_client.get(f"{BASE}2/").json()["parent"] == 1


def test_a_version_being_built_shows_its_progress(ops_client, labeled):
    response = ops_client.post(BASE, {}, format="json")  # no commit here: the build has not run
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "building" and body["phase"] == "queued" and body["progress"] == 0.0
    assert body["manifest_sha256"] is None and body["counts"]["rows"] == 0


def test_the_list_is_newest_first_in_constant_queries(ops_client, labeled, django_assert_max_num_queries):
    for _ in range(4):
        build(labeled)
    with django_assert_max_num_queries(6):
        response = ops_client.get(BASE)
    assert [v["version"] for v in response.json()] == [4, 3, 2, 1]
    assert [v["parent"] for v in response.json()] == [3, 2, 1, None]


def test_retry_of_a_ready_version_is_refused(ops_client, labeled):
    build(labeled)
    response = ops_client.post(f"{BASE}1/retry/", format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "dataset_ready"


def test_diff_between_two_versions(ops_client, labeled):
    build(labeled)
    label(labeled, [1, 2], ["7", "7"])
    label(labeled, [55])
    build(labeled)
    response = ops_client.get(f"{BASE}1/diff/2/?examples=1")
    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"], body["added"], body["removed"], body["relabeled"]) == (1, 2, 1, 0, 2)
    assert body["examples"]["added"] == [{"prediction_id": "p-55", "label": "5"}]
    assert len(body["examples"]["relabeled"]) == 1


def test_diff_of_a_version_that_is_not_ready_is_a_conflict(ops_client, labeled):
    build(labeled)
    ops_client.post(BASE, {}, format="json")  # building
    response = ops_client.get(f"{BASE}1/diff/2/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "dataset_not_ready"
    assert ops_client.get(f"{BASE}1/diff/9/").status_code == 404
    assert ops_client.get(f"{BASE}1/diff/2/?examples=many").status_code == 400


def test_export_streams_jsonl_and_csv(ops_client, labeled):
    version = build(labeled)
    response = ops_client.get(f"{BASE}1/export/jsonl/")
    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    assert response.streaming and response["X-Dataset-Rows"] == "50"
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert len(lines) == 50
    row = next(line for line in lines if line["prediction_id"] == "p-4")
    assert row["label"] == "4" and row["source"] == "annotation" and row["weight"] == 1.0
    assert row["features"] == {"f0": 4.0, "f1": 4 / 7, "color": "red"}
    assert row["input"] == {"kind": "image_url", "url": "s3://images/4.png"}

    response = ops_client.get(f"{BASE}1/export/csv/?split=train")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="digits-v1-train.csv"' in response["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(table) == version.counts["by_split"]["train"] == int(response["X-Dataset-Rows"])
    assert {r["split"] for r in table} == {"train"}
    assert set(table[0]) >= {"prediction_id", "label", "source", "weight", "feature.f0", "feature.color"}


def test_export_of_an_empty_version_has_a_header(ops_client, project):
    build(project)
    response = ops_client.get(f"{BASE}1/export/csv/")
    assert b"".join(response.streaming_content).decode().startswith('"prediction_id","split"')


@pytest.mark.parametrize("path, status", [
    ("1/export/parquet/", 404), ("1/export/csv/?split=holdout", 400), ("7/", 404), ("99999999999999999999/", 404),
    ("0/export/jsonl/", 404), ("x/", 404),
])
def test_bad_requests_get_the_error_body(ops_client, labeled, path, status):
    build(labeled)
    response = ops_client.get(BASE + path)
    assert response.status_code == status and response.json()["error"]["code"]


def test_bad_bodies_get_a_400(ops_client, project):
    for body in ({"note": "x" * 501}, {"note": ["not", "text"]}, [1, 2]):
        response = ops_client.post(BASE, body, format="json")
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "invalid"


def test_a_corrupt_dataset_is_a_502_not_a_500(ops_client, labeled):
    version = build(labeled)
    label(labeled, range(50), ["3"] * 50)
    build(labeled)  # every label shard differs, so a diff reads them all
    shard = next(s for s in dataset_selectors.manifest_load(version=version)["shards"] if s["kind"] == "labels")
    get_storage().put(dataset_selectors.shard_key(labeled.slug, shard["sha256"]), b"garbage")
    response = ops_client.get(f"{BASE}1/diff/2/")
    assert response.status_code == 502 and response.json()["error"]["code"] == "dataset_corrupt"
    assert shard["sha256"] in response.json()["error"]["message"]
    response = ops_client.get(f"{BASE}1/export/jsonl/")
    assert response.status_code == 200  # the stream starts; the bad shard ends it early
    assert len(b"".join(response.streaming_content).splitlines()) < 50
    get_storage().put(version.manifest_key, b"{}")
    response = ops_client.get(f"{BASE}1/export/csv/")  # a bad manifest is caught before the first byte
    assert response.status_code == 502 and response.json()["error"]["code"] == "dataset_corrupt"


def test_storage_that_is_away_is_a_503(ops_client, labeled, settings):
    build(labeled)
    settings.FLYWHEEL_STORAGE_BACKEND = "s3"
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.S3_MAX_ATTEMPTS = 1
    response = ops_client.get(f"{BASE}1/export/jsonl/")
    assert response.status_code == 503 and response.json()["error"]["code"] == "storage_unavailable"


def test_another_projects_versions_are_invisible(labeled, other_project):
    build(labeled)
    client = factories.api_client(factories.user_with_role("ops", other_project)[1])
    assert client.get(f"{BASE}1/").status_code == 404
    assert client.get("/api/v1/projects/other/datasets/1/").status_code == 404


def test_schema_describes_the_dataset_endpoints(client, db):
    schema = json.loads(client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    for path in ("/api/v1/projects/{slug}/datasets/", "/api/v1/projects/{slug}/datasets/{version}/",
                 "/api/v1/projects/{slug}/datasets/{a}/diff/{b}/",
                 "/api/v1/projects/{slug}/datasets/{version}/export/jsonl/",
                 "/api/v1/projects/{slug}/datasets/{version}/export/csv/"):
        assert path in schema["paths"]
    assert "202" in schema["paths"]["/api/v1/projects/{slug}/datasets/"]["post"]["responses"]


# --- dataset_pull ---------------------------------------------------------------------------


@pytest.fixture(params=["file", "s3"])
def backend(request):
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    return request.param


def test_pull_downloads_a_version_and_verifies_every_hash(labeled, backend, tmp_path):
    version = build(labeled)
    out = io.StringIO()
    call_command("dataset_pull", "digits", "1", str(tmp_path / "pulled"), stdout=out)
    assert "50 rows" in out.getvalue() and "all verified" in out.getvalue()
    manifest = (tmp_path / "pulled" / "manifest.json").read_bytes()
    document = dataset_selectors.shards.parse_manifest(manifest, sha256=version.manifest_sha256)
    for shard in document["shards"]:
        path = tmp_path / "pulled" / "shards" / f"{shard['sha256']}.parquet"
        assert dataset_selectors.shards.sha256_file(path) == shard["sha256"]
    again = io.StringIO()
    call_command("dataset_pull", "digits", "1", str(tmp_path / "pulled"), stdout=again)
    assert " 0 downloaded" in again.getvalue()


def test_pull_refuses_a_corrupted_shard(labeled, backend, tmp_path):
    version = build(labeled)
    shard = dataset_selectors.manifest_load(version=version)["shards"][0]
    key = dataset_selectors.shard_key(labeled.slug, shard["sha256"])
    storage = get_storage()
    damaged = bytearray(storage.get(key))
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte
    storage.put(key, bytes(damaged))
    with pytest.raises(CommandError, match=f"Shard {shard['sha256']} of version 1 is corrupted"):
        call_command("dataset_pull", "digits", "1", str(tmp_path / "pulled"))
    assert not (tmp_path / "pulled" / "shards" / f"{shard['sha256']}.parquet").exists()
    assert not (tmp_path / "pulled" / "manifest.json").exists()  # no manifest: not a whole version


def test_pull_refuses_a_tampered_manifest_and_unknown_versions(labeled, tmp_path):
    version = build(labeled)
    get_storage().put(version.manifest_key, get_storage().get(version.manifest_key).replace(b'"rows"', b'"Rows"'))
    with pytest.raises(CommandError, match="manifest is corrupted"):
        call_command("dataset_pull", "digits", "1", str(tmp_path))
    with pytest.raises(CommandError, match="no dataset version 5"):
        call_command("dataset_pull", "digits", "5", str(tmp_path))
    with pytest.raises(CommandError, match="No project"):
        call_command("dataset_pull", "nope", "1", str(tmp_path))
