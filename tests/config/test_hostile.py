"""Hostile input across the API, beyond what tests/flywheel/test_ingest_bad_input.py and
test_gateway.py already pin for prediction logging: each refusal is the docs/api.md error
body naming the field and the reason, never a 500, and leaves what is stored as it was.

- image URLs: loopback, private and link-local hosts in every spelling a browser
  understands, and other schemes, are refused; the server never fetches any URL;
- images: decompression bombs and real images of formats the service does not take;
- names that reach storage keys (project slugs, model names, artifact URIs, path parts);
- bodies over the size limit, deep nesting, NaN and invalid UTF-8 on endpoints other
  than prediction logging; a 10,000-item feedback batch with one bad item.
"""

import base64
import io
import json
import socket
import struct
import zlib

import httpx
import pytest
from django.test import override_settings
from PIL import Image

from accounts.models import Role
from common.json import NUL_REASON
from flywheel.models import Feedback, ModelVersion, Prediction, Project, TrainingRun
from labeling.models import Task
from tests import factories
from tests.factories import prediction

PREDICTIONS = "/api/v1/projects/digits/predictions/"


def assert_error(response, status, *, field=None, reason=None, code=None):
    assert response.status_code == status, response.content[:500]
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if code:
        assert error["code"] == code, error
    if field:
        assert field in error.get("fields", {}), error
        if reason:
            assert reason.lower() in " ".join(error["fields"][field]).lower(), error
    return error


@pytest.fixture
def no_network(monkeypatch):
    """Any outgoing connection attempt fails the test: the server must not fetch a URL."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"The server tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def png_bytes(size=(8, 8), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color=(200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes: a decompression bomb's
    header, with one compressed row of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width // 8 + 2))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- image_url: never fetched, and never pointing into private networks ------------------------

REFUSED_IMAGE_URLS = [
    ("file:///etc/passwd", "s3:// and https://"),
    ("ftp://example.com/x.png", "s3:// and https://"),
    ("gopher://127.0.0.1:6379/_INFO", "s3:// and https://"),
    ("data:image/png;base64,AAAA", "s3:// and https://"),
    ("javascript:alert(1)", "s3:// and https://"),
    ("//127.0.0.1/x.png", "s3:// and https://"),
    ("https://[::1]/x.png", "loopback"),
    ("https://[0:0:0:0:0:0:0:1]/x.png", "loopback"),
    ("https://[::ffff:127.0.0.1]/x.png", "loopback"),
    ("https://10.1.2.3/x.png", "private"),
    ("https://172.16.0.9/x.png", "private"),
    ("https://192.168.0.1/x.png", "private"),
    ("https://100.64.0.1/x.png", "private"),
    ("https://0.0.0.0/x.png", "private"),
    ("https://[fe80::1]/x.png", "link-local"),
    ("https://[fd00::1]/x.png", "private"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    # Spellings of 127.0.0.1 that browsers resolve the same way.
    ("https://2130706433/x.png", "loopback"),
    ("https://0x7f000001/x.png", "loopback"),
    ("https://0177.0.0.1/x.png", "loopback"),
    ("https://127.1/x.png", "loopback"),
    ("https://0/x.png", "private"),
    ("https://\uff11\uff12\uff17.0.0.1/x.png", "loopback"),  # full-width digits
    ("https://%31%32%37.0.0.1/x.png", "percent-encoded"),
    ("https://localhost./x.png", "local host"),
    ("https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/x.png", "local host"),  # full-width
    ("https://printer.local/x.png", "local host"),
    ("https://metadata.google.internal/computeMetadata/v1/", "local host"),
    ("https://user@127.0.0.1/x.png", "loopback"),
    ("https://127.0.0.1\\@example.com/x.png", "backslash"),
    ("https://example.com/x.png\n", "control"),
    ("https://exa mple.com/x.png", "spaces"),
    ("https://1.2.3.4.5/x.png", "IPv4"),
    ("https://example.com:99999/x.png", "not a valid URL"),
    ("s3://bucket/images/../../secret.png", ".."),
    ("https://" + "a" * 2100 + ".com/x.png", "2048"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_IMAGE_URLS, ids=[u[:40] for u, _ in REFUSED_IMAGE_URLS])
def test_image_urls_into_private_networks_or_other_schemes_are_refused(app_client, project, no_network,
                                                                         url, reason):
    response = app_client.post(PREDICTIONS, prediction(1, input={"image_url": url}), format="json")
    assert_error(response, 400, field="input.image_url", reason=reason, code="invalid")
    assert not Prediction.objects.exists() and not no_network


def test_a_bad_image_url_deep_in_a_batch_is_named_by_index_and_nothing_is_stored(app_client, project):
    items = [prediction(i, input={"image_url": f"https://cdn.example.com/{i}.png"}) for i in range(500)]
    items[321]["input"]["image_url"] = "https://[::1]/x.png"
    response = app_client.post(PREDICTIONS, {"predictions": items}, format="json")
    error = assert_error(response, 400, field="predictions[321].input.image_url", reason="loopback")
    assert list(error["fields"]) == ["predictions[321].input.image_url"]
    assert not Prediction.objects.exists() and not Task.objects.exists()


def test_the_server_never_fetches_an_image_url(app_client, project, no_network):
    """An https:// image goes to the annotator's browser as is; an s3:// one outside the
    service's own bucket is not read. The image endpoint answers 404 for both without
    opening a connection."""
    annotator = factories.api_client(factories.user_with_role(Role.ANNOTATOR, project)[1])
    for i, url in enumerate(["https://cdn.example.com/7.png", "s3://someone-elses-bucket/7.png"]):
        response = app_client.post(PREDICTIONS, prediction(i, confidence=0.2, input={"image_url": url}),
                                   format="json")
        assert response.status_code == 201, response.content
        task_id = response.json()["results"][0]["task_id"]
        image = annotator.get(f"/api/v1/tasks/{task_id}/image/")
        assert_error(image, 404, code="image_unavailable")
    claimed = annotator.post("/api/v1/projects/digits/tasks/next/").json()["task"]
    shown = claimed["prediction"]["image_url"]
    assert shown in ("https://cdn.example.com/7.png", f"/api/v1/tasks/{claimed['id']}/image/")
    assert no_network == []


# --- images ---------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_from_its_header(app_client, project):
    bomb = png_header_only(100_000, 100_000)  # 10 billion pixels in under 100 bytes
    assert len(bomb) < 200
    response = app_client.post(PREDICTIONS, prediction(1, input={"image": b64(bomb)}), format="json")
    assert_error(response, 400, field="input.image", reason="pixels")
    assert not Prediction.objects.exists()


def test_an_image_just_over_the_pixel_limit_is_refused_and_one_under_it_taken(app_client, project):
    with override_settings(FLYWHEEL_MAX_IMAGE_PIXELS=64 * 64):
        over = app_client.post(PREDICTIONS, prediction(1, input={"image": b64(png_bytes((64, 65)))}), format="json")
        assert_error(over, 400, field="input.image", reason="pixels")
        under = app_client.post(PREDICTIONS, prediction(2, input={"image": b64(png_bytes((64, 64)))}),
                                format="json")
    assert under.status_code == 201
    assert list(Prediction.objects.values_list("external_id", flat=True)) == ["p-2"]


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM"])
def test_real_images_of_other_formats_are_refused(app_client, project, fmt):
    response = app_client.post(PREDICTIONS, prediction(1, input={"image": b64(image_bytes(fmt))}), format="json")
    assert_error(response, 400, field="input.image", reason="PNG, JPEG")
    assert not Prediction.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
        b"PK\x03\x04" + b"\x00" * 40,
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        b"\xff\xd8\xff\xe0" + b"\x00" * 10,  # a JPEG that stops in its header
    ],
    ids=["svg", "pdf", "zip", "png-signature-only", "jpeg-header-only"],
)
def test_files_that_are_not_readable_images_are_refused(app_client, project, data):
    response = app_client.post(PREDICTIONS, prediction(1, input={"image": b64(data)}), format="json")
    assert_error(response, 400, field="input.image", reason="image")
    assert not Prediction.objects.exists()


def test_a_data_url_that_is_not_base64_is_refused(app_client, project):
    response = app_client.post(PREDICTIONS, prediction(1, input={"image": "data:image/png,%89PNG"}), format="json")
    assert_error(response, 400, field="input.image", reason="base64")


# --- names that reach storage keys ------------------------------------------------------------

PATH_TRICKS = ["../etc", "..", "a/b", "/etc/passwd", "a\\b", "a\x00b", "caf\u00e9", "\u2025", "a..b/..", "a%2fb",
               "\uff0e\uff0e"]


@pytest.mark.parametrize("slug", PATH_TRICKS)
def test_project_slugs_with_path_tricks_are_refused(admin_client, slug):
    response = admin_client.post("/api/v1/projects/", {"slug": slug, "name": "X", "labels": ["a"]}, format="json")
    assert_error(response, 400, field="slug", code="invalid")
    assert not Project.objects.exists()


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a\\..\\b", "run-1\x00.pkl", "/abs", "ru\u0301n-1"])
def test_external_model_names_with_path_tricks_are_refused(project, name):
    ops = factories.api_client(factories.user_with_role(Role.OPS, project)[1])
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="waiting",
                                     trigger="manual", trainer="external")
    response = ops.post(f"/api/v1/training-runs/{run.pk}/complete/",
                        {"model_version": name, "artifact_uri": "s3://models/x.pkl"}, format="json")
    assert_error(response, 400, field="model_version", code="invalid")
    assert not ModelVersion.objects.exists()


def test_an_external_artifact_uri_is_recorded_but_never_read(project, no_network):
    """The service hands out only artifacts it trained and stored under their hash: an
    external trainer's URI, even file:// or a path out of the store, is just a record."""
    ops = factories.api_client(factories.user_with_role(Role.OPS, project)[1])
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="waiting",
                                     trigger="manual", trainer="external")
    response = ops.post(f"/api/v1/training-runs/{run.pk}/complete/",
                        {"model_version": "ext-1", "artifact_uri": "file:///etc/passwd"}, format="json")
    assert response.status_code == 200, response.content
    artifact = ops.get("/api/v1/projects/digits/models/ext-1/artifact/")
    assert_error(artifact, 404, code="no_artifact")
    assert b"root:" not in artifact.content and no_network == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/projects/digits/models/..%2F..%2Fetc%2Fpasswd/artifact/",
        "/api/v1/projects/digits/models/%2e%2e/artifact/",
        "/api/v1/projects/digits/predictions/..%2F..%2Fetc%2Fpasswd/",
        "/api/v1/projects/..%2Fother/",
        "/api/v1/projects/digits/datasets/99999999999999999999999/",
        "/api/v1/tasks/99999999999999999999999/image/",
        "/api/v1/projects/digits/datasets/1/diff/99999999999999999999/",
    ],
)
def test_path_tricks_in_urls_are_404_with_the_error_body(project, path):
    ops = factories.api_client(factories.user_with_role(Role.OPS, project)[1])
    response = ops.get(path)
    assert_error(response, 404)


# --- bodies: size, nesting, NaN, encoding, on every kind of endpoint -------------------------------

JSON_ENDPOINTS = [
    ("POST", "/api/v1/projects/"),
    ("PATCH", "/api/v1/projects/digits/"),
    ("POST", "/api/v1/projects/digits/feedback/"),
    ("POST", "/api/v1/projects/digits/gold/"),
    ("POST", "/api/v1/projects/digits/drift/checks/"),
    ("PUT", "/api/v1/projects/digits/drift/reference/"),
    ("POST", "/api/v1/projects/digits/datasets/"),
    ("POST", "/api/v1/projects/digits/training-runs/"),
]


@pytest.fixture
def admin(project):
    return factories.api_client(factories.user_with_role(Role.ADMIN, project)[1])


def snapshot():
    return (list(Project.objects.order_by("pk").values()), Prediction.objects.count(), Feedback.objects.count(),
            Task.objects.count(), TrainingRun.objects.count())


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "malformed_body"),
        (b'{"name": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001, "application/json", 400, "malformed_body"),
        (b'{"name": NaN}', "application/json", 400, "malformed_body"),
        (b'{"threshold": Infinity}', "application/json", 400, "malformed_body"),
        (b'{"name": "\xff\xfe"}', "application/json", 400, "malformed_body"),
        (b'{"name": "\xed\xa0\x80"}', "application/json", 400, "malformed_body"),  # a UTF-16 surrogate
        (b"\xef\xbb\xbf{}", "application/json", 400, "malformed_body"),  # a UTF-8 byte order mark
        (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"<name>x</name>", "application/xml", 415, "unsupported_media_type"),
    ],
    ids=["deep-lists", "deep-objects", "nan", "infinity", "invalid-utf8", "surrogate", "bom", "form", "xml"],
)
@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
def test_malformed_bodies_are_refused_everywhere(admin, method, path, body, content_type, status, code):
    before = snapshot()
    response = admin.generic(method, path, body, content_type=content_type)
    assert_error(response, status, code=code)
    assert snapshot() == before


@override_settings(FLYWHEEL_MAX_BODY_BYTES=1_000)
@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
def test_bodies_over_the_size_limit_are_413_everywhere(admin, method, path):
    before = snapshot()
    response = admin.generic(method, path, b'{"note": "' + b"x" * 2_000 + b'"}', content_type="application/json")
    assert_error(response, 413, code="body_too_large")
    assert snapshot() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/projects/digits/models/run-1%00.pkl/artifact/",
        "/api/v1/projects/digits/predictions/%00/",
        "/api/v1/projects/digits/predictions/p-1/?x=%00",
        "/api/v1/projects/digits/tasks/?reason=%00",
        "/label/?project=%00",
    ],
)
def test_a_nul_anywhere_in_the_url_is_400(admin, path):
    """PostgreSQL stores no NUL: a lookup by such a value failed as a 500."""
    assert_error(admin.get(path), 400, code="malformed_url")


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", PREDICTIONS, prediction(1, features={"f0": 1.0, "color": "re\x00d"}), "features.color"),
        ("POST", PREDICTIONS, {"predictions": [prediction(1), prediction(2, metadata={"k": "\x00"})]},
         "predictions[1].metadata.k"),
        ("POST", PREDICTIONS, prediction(1, id="p\x001"), "id"),
        ("POST", "/api/v1/projects/digits/feedback/", {"prediction_id": "p-1", "kind": "confirm", "user": "\x00"},
         "user"),
        ("POST", "/api/v1/projects/", {"slug": "x", "name": "X\x00", "labels": ["a"]}, "name"),
        ("PATCH", "/api/v1/projects/digits/", {"labels": [str(i) for i in range(10)] + ["\x00"]}, "labels[10]"),
        ("POST", "/api/v1/projects/digits/datasets/", {"note": "\x00"}, "note"),
        ("POST", "/api/v1/projects/digits/gold/", {"prediction_id": "\x00", "label": "1"}, "prediction_id"),
    ],
)
def test_a_nul_in_any_json_string_is_refused_naming_the_field(admin, app_client, method, path, body, field):
    client = app_client if path.endswith(("predictions/", "feedback/")) else admin
    before = snapshot()
    response = client.generic(method, path, json.dumps(body), content_type="application/json")
    assert_error(response, 400, field=field, reason="NUL")
    assert snapshot() == before


def test_a_nul_in_a_token_is_401(project):
    client = factories.api_client("abc\x00def")
    assert_error(client.get("/api/v1/projects/"), 401)


def test_invalid_utf8_in_the_query_string_and_headers_is_not_a_500(admin, project):
    response = admin.get("/api/v1/projects/digits/tasks/", QUERY_STRING="status=%ff%fe&reason=%c0%ae")
    assert_error(response, 400, field="status")
    anonymous = factories.api_client()
    response = anonymous.get("/api/v1/projects/", HTTP_AUTHORIZATION="Token \udcff\udcfe".encode(
        "utf-8", "surrogateescape").decode("latin-1"))
    assert_error(response, 401)


def test_deeply_nested_metrics_from_an_external_trainer_are_refused_not_stored(project):
    """orjson reads 1,024 levels but writes only 254: a deeper document that got stored
    would make every later answer about the run a 500."""
    ops = factories.api_client(factories.user_with_role(Role.OPS, project)[1])
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="waiting",
                                     trigger="manual", trainer="external")
    deep: dict = {}
    for _ in range(600):
        deep = {"a": deep}
    response = ops.post(f"/api/v1/training-runs/{run.pk}/complete/",
                        {"model_version": "ext-1", "artifact_uri": "s3://m/x.pkl", "metrics": deep}, format="json")
    assert_error(response, 400, field="metrics", reason="nested")
    assert not ModelVersion.objects.exists()
    assert ops.get(f"/api/v1/projects/digits/training-runs/{run.pk}/").status_code == 200


def test_a_patched_feature_without_name_or_type_is_refused(admin, project):
    before = snapshot()
    response = admin.patch("/api/v1/projects/digits/", {"features": [{"type": "numeric"}, {"name": "f9"}]},
                           format="json")
    error = assert_error(response, 400, field="features[0].name", reason="required")
    assert "features[1].type" in error["fields"]
    assert snapshot() == before


def test_a_huge_task_list_offset_is_refused(admin, project):
    response = admin.get("/api/v1/projects/digits/tasks/", {"offset": 10**20})
    assert_error(response, 400, field="offset")


# --- batches: all or nothing, the bad item named --------------------------------------------------


def test_a_10000_item_feedback_batch_with_one_bad_item_stores_nothing(app_client, project):
    app_client.post(PREDICTIONS, prediction(1), format="json")
    items = [{"id": f"f-{i}", "prediction_id": "p-1", "kind": "confirm", "user": f"u-{i}"} for i in range(10_000)]
    items[7_777]["kind"] = "love"
    response = app_client.post("/api/v1/projects/digits/feedback/", {"feedback": items}, format="json")
    error = assert_error(response, 400, field="feedback[7777].kind")
    assert list(error["fields"]) == ["feedback[7777].kind"]
    assert not Feedback.objects.exists()


def test_a_feedback_batch_over_the_limit_is_413(app_client, project):
    items = [{"prediction_id": "p-1", "kind": "confirm"}] * 10_001
    response = app_client.post("/api/v1/projects/digits/feedback/", {"feedback": items}, format="json")
    assert_error(response, 413, code="batch_too_large")
    assert not Feedback.objects.exists()


def test_a_failed_batch_leaves_earlier_predictions_and_their_tasks_untouched(app_client, project):
    app_client.post(PREDICTIONS, {"predictions": [prediction(i, confidence=0.2) for i in range(3)]}, format="json")
    before = (list(Prediction.objects.order_by("pk").values()), list(Task.objects.order_by("pk").values()))
    items = [prediction(i, confidence=0.95) for i in range(10_000)]  # 0-2 repeat stored ids
    items[9_999]["features"] = {"f0": "NaN"}
    response = app_client.post(PREDICTIONS, {"predictions": items}, format="json")
    assert_error(response, 400, field="predictions[9999].features.f0", reason="number")
    assert (list(Prediction.objects.order_by("pk").values()), list(Task.objects.order_by("pk").values())) == before


def test_an_image_url_stored_before_a_spelling_was_refused_is_not_shown(app_client, project):
    response = app_client.post(PREDICTIONS, prediction(1, confidence=0.2), format="json")
    Prediction.objects.update(input={"image_url": "https://0x7f000001/admin.png"})
    annotator = factories.api_client(factories.user_with_role(Role.ANNOTATOR, project)[1])
    task = annotator.post("/api/v1/projects/digits/tasks/next/").json()["task"]
    assert task["id"] == response.json()["results"][0]["task_id"]
    assert task["prediction"]["image_url"] is None


# --- the ASGI ingestion gateway answers the same ------------------------------------------------


def test_the_gateway_refuses_a_nul_naming_the_field_and_a_chunked_body_over_the_limit(db, project, app_token):
    from asgiref.sync import async_to_sync
    from django.core.asgi import get_asgi_application

    from flywheel.ingest.gateway import IngestGateway
    from tests.asgi import in_test_thread
    from tests.flywheel.ingest.test_gateway import post

    gateway = IngestGateway(get_asgi_application(), run_sync=in_test_thread)
    response = post(gateway, prediction(1, features={"color": "re\x00d"}), app_token)
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"features.color": [NUL_REASON]}

    async def chunked():
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            async def body():  # no Content-Length: the gateway counts while it reads
                for _ in range(10):
                    yield b" " * 500
            return await client.post(PREDICTIONS, content=body(), headers={
                "Authorization": f"Token {app_token}", "Content-Type": "application/json"})

    with override_settings(FLYWHEEL_MAX_BODY_BYTES=1_000):
        response = async_to_sync(chunked)()
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    assert not Prediction.objects.exists()
