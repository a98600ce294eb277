"""Every malformed ingestion request gets the docs/api.md error body naming the field and the
reason, never a 500, and stores nothing."""

import base64
import io

import pytest
from django.test import override_settings
from PIL import Image

from flywheel.models import Prediction
from labeling.models import Task
from tests.factories import prediction

URL = "/api/v1/projects/digits/predictions/"


def post_raw(client, body: bytes, content_type="application/json"):
    return client.generic("POST", URL, body, content_type=content_type)


def assert_refused(response, status, field=None, code=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    if field:
        assert field in error["fields"], error
        assert error["fields"][field][0]
    assert Prediction.objects.count() == 0 and Task.objects.count() == 0


@pytest.mark.parametrize(
    ("changes", "field", "reason_part"),
    [
        ({"model_version": None}, "model_version", "required"),
        ({"label": None}, "label", "required"),
        ({"confidence": None}, "confidence", "required"),
        ({"confidence": "high"}, "confidence", "number"),
        ({"confidence": 1.5}, "confidence", "between 0 and 1"),
        ({"confidence": -0.1}, "confidence", "between 0 and 1"),
        ({"confidence": True}, "confidence", "number"),
        ({"label": "cat"}, "label", "label set"),
        ({"label": 7}, "label", "string"),
        ({"model_version": "../../etc"}, "model_version", "letters"),
        ({"id": ""}, "id", "1 to 128"),
        ({"id": "x" * 129}, "id", "1 to 128"),
        ({"id": {"a": 1}}, "id", "string"),
        ({"probabilities": {"1": 0.5, "2": 0.4}}, "probabilities", "sum to 1"),
        ({"probabilities": {"1": 0.5, "cat": 0.5}}, "probabilities.cat", "label set"),
        ({"probabilities": {"1": 1.2, "2": -0.2}}, "probabilities.1", "between 0 and 1"),
        ({"probabilities": []}, "probabilities", "object"),
        ({"probabilities": {"2": 1.0}}, "probabilities", "predicted label"),
        ({"probabilities": {"1": 0.6, "2": 0.4}, "confidence": 0.9}, "confidence", "Differs"),
        ({"features": {"f0": "abc", "f1": 1, "color": "red"}}, "features.f0", "number"),
        ({"features": {"nope": 1}}, "features.nope", "feature schema"),
        ({"features": {"f0": 1.5, "nope": 1}}, "features.nope", "feature schema"),
        ({"features": {"f0": True, "f1": 1.0}}, "features.f0", "number"),
        ({"features": {"color": ["red"]}}, "features.color", "string"),
        ({"features": [1, 2]}, "features", "object"),
        ({"input": {"video": "x"}}, "input.video", "Unknown"),
        ({"input": {"image": "not base64!!"}}, "input.image", "base64"),
        ({"input": {"image": base64.b64encode(b"plain text, not an image").decode()}}, "input.image", "image"),
        ({"input": {"image_url": "file:///etc/passwd"}}, "input.image_url", "s3:// and https://"),
        ({"input": {"image_url": "https://127.0.0.1/x.png"}}, "input.image_url", "loopback"),
        ({"input": {"image_url": "https://169.254.169.254/latest/meta-data"}}, "input.image_url", "link-local"),
        ({"input": {"image_url": "https://localhost/x.png"}}, "input.image_url", "local host"),
        ({"input": {"image_url": "http://example.com/x.png"}}, "input.image_url", "https"),
        ({"input": {"image_url": "s3://bucket/../secret"}}, "input.image_url", ".."),
        ({"metadata": "eu"}, "metadata", "object"),
        ({"metadata": {"region": {"nested": 1}}}, "metadata.region", "string"),
        ({"created_at": "yesterday"}, "created_at", "ISO 8601"),
        ({"created_at": "2026-01-01T10:00:00"}, "created_at", "time zone"),
        ({"created_at": "2999-01-01T10:00:00Z"}, "created_at", "future"),
        ({"surprise": 1}, "surprise", "Unknown"),
        ({"embedding": []}, "embedding", "1 to 4096"),
        ({"embedding": "0.1 0.2"}, "embedding", "list"),
        ({"embedding": [0.0] * 4097}, "embedding", "1 to 4096"),
        ({"embedding": [0.1, "x"]}, "embedding[1]", "finite number"),
        ({"embedding": [0.1, True]}, "embedding[1]", "finite number"),
        ({"embedding": [1e39]}, "embedding[0]", "3.4e38"),
        ({"embedding": [10**39]}, "embedding[0]", "3.4e38"),
    ],
)
def test_invalid_prediction_field_is_named_with_its_reason(app_client, project, changes, field, reason_part):
    body = prediction(1)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    response = app_client.post(URL, body, format="json")
    assert_refused(response, 400, field=field, code="invalid")
    assert reason_part.lower() in " ".join(response.json()["error"]["fields"][field]).lower()


def test_one_bad_item_fails_the_whole_batch_and_is_keyed_by_index(app_client, project):
    items = [prediction(i) for i in range(10_000)]
    items[3]["confidence"] = 2
    response = app_client.post(URL, {"predictions": items}, format="json")
    assert_refused(response, 400, field="predictions[3].confidence")
    assert list(response.json()["error"]["fields"]) == ["predictions[3].confidence"]


def test_errors_in_several_items_are_all_reported(app_client, project):
    items = [prediction(i) for i in range(5)]
    items[1]["label"] = "x"
    items[4]["features"] = {"f0": "nan"}
    fields = app_client.post(URL, {"predictions": items}, format="json").json()["error"]["fields"]
    assert set(fields) == {"predictions[1].label", "predictions[4].features.f0"}


def test_a_failed_request_leaves_what_was_stored_untouched(app_client, project):
    app_client.post(URL, prediction(1, confidence=0.2), format="json")
    before = list(Prediction.objects.values())
    items = [prediction(1, confidence=0.9), prediction(2, confidence="x")]
    assert app_client.post(URL, {"predictions": items}, format="json").status_code == 400
    assert list(Prediction.objects.values()) == before and Task.objects.count() == 1


@pytest.mark.parametrize("features", [
    {"f0": 1e308, "f1": 1e308},  # each finite, though their sum is not
    {"f0": 10**30, "f1": -2},
    {"f0": 0.5, "f1": None},
    {"f0": 0.5, "color": 7},  # a number sent for a category is that category
])
def test_valid_features_at_the_edges_of_the_fast_check_are_stored(app_client, project, features):
    response = app_client.post(URL, prediction(1, features=features), format="json")
    assert response.status_code == 201, response.content
    expected = {**features, "color": "7"} if "color" in features else features
    # The JSON column gives 1e308 back as the integer it equals, so numbers compare as floats.
    as_floats = {k: float(v) if isinstance(v, int | float) else v for k, v in Prediction.objects.get().features.items()}
    assert as_floats == {k: float(v) if isinstance(v, int | float) else v for k, v in expected.items()}


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(app_client, project, literal):
    body = b'{"id": "a", "model_version": "v1", "label": "1", "confidence": ' + literal + b"}"
    assert_refused(post_raw(app_client, body), 400, code="malformed_body")


def test_huge_number_is_refused(app_client, project):
    body = b'{"id": "a", "model_version": "v1", "label": "1", "confidence": 0.5, "features": {"f0": 1e999}}'
    response = post_raw(app_client, body)
    assert response.status_code == 400


@pytest.mark.parametrize("body", [b"{", b"", b"[]", b'"text"', b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000])
def test_malformed_bodies_are_400(app_client, project, body):
    response = post_raw(app_client, body)
    assert_refused(response, 400)


def test_wrong_content_type_is_415(app_client, project):
    response = post_raw(app_client, b"model_version=v1", content_type="application/x-www-form-urlencoded")
    assert_refused(response, 415, code="unsupported_media_type")


def test_empty_batch_is_400(app_client, project):
    assert_refused(app_client.post(URL, {"predictions": []}, format="json"), 400, field="predictions")


def test_batch_over_the_limit_is_413(app_client, project):
    items = [prediction(i) for i in range(10_001)]
    assert_refused(app_client.post(URL, {"predictions": items}, format="json"), 413, code="batch_too_large")


@override_settings(FLYWHEEL_MAX_BODY_BYTES=2_000)
def test_body_over_the_size_limit_is_413(app_client, project):
    items = [prediction(i) for i in range(50)]
    assert_refused(app_client.post(URL, {"predictions": items}, format="json"), 413, code="body_too_large")


def test_truncated_image_is_refused(app_client, project):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color=(10, 200, 30)).save(buffer, format="PNG")
    truncated = base64.b64encode(buffer.getvalue()[:-30]).decode()
    response = app_client.post(URL, prediction(1, input={"image": truncated}), format="json")
    assert_refused(response, 400, field="input.image")


@override_settings(FLYWHEEL_MAX_IMAGE_PIXELS=10_000)
def test_image_with_too_many_pixels_is_refused(app_client, project):
    buffer = io.BytesIO()
    Image.new("1", (2000, 2000)).save(buffer, format="PNG")  # a few hundred bytes, 4 million pixels
    response = app_client.post(
        URL, prediction(1, input={"image": base64.b64encode(buffer.getvalue()).decode()}), format="json"
    )
    assert_refused(response, 400, field="input.image")
    assert "pixels" in response.json()["error"]["fields"]["input.image"][0]


def test_unknown_project_is_404(app_client, project):
    response = app_client.post("/api/v1/projects/nope/predictions/", prediction(1), format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "project_not_found"
