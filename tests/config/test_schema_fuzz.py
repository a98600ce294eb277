"""Schemathesis against the schema the service serves at /api/v1/schema/: every operation,
valid and invalid input, in process through Django's WSGI handler on the test database.
No request may get a 500, and every answer must be one the schema describes (status,
content type, body), error bodies included.

Bounded: the coverage phase (boundary values and wrong types for each parameter and
property, deterministic) plus FUZZ_EXAMPLES random cases per operation."""

import numpy as np
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from accounts.models import Role
from flywheel.datasets import services as datasets
from flywheel.models import ModelSource, ModelVersion, TrainingRun
from monitoring import services as monitoring_services
from sim.demo import digit_png
from tests import factories

FUZZ_EXAMPLES = 10

schema = schemathesis.openapi.from_wsgi(
    "/api/v1/schema/",
    get_wsgi_application(),
    config=SchemathesisConfig.from_dict({
        "phases": {"coverage": {"enabled": True}, "fuzzing": {"enabled": True}},
        # Authentication is the test's own valid token; who may do what is test_access.py's matrix.
        "generation": {"with-security-parameters": False},
        "checks": {
            # Schema-valid is not domain-valid: a label outside the project's label set, an
            # annotation without a lease, a drift reference with neither window nor version
            # are refused with 400/409 by rules no OpenAPI schema can state.
            "positive_data_acceptance": {"enabled": False},
            # The API is lenient in three documented ways the strict schema does not show:
            # DRF takes a number sent for a string as its text ("note": 0), an empty query
            # value (?status=) means "not given", and null for an optional field means
            # absent. Refusals of truly invalid input are asserted in test_hostile.py and
            # tests/flywheel/test_ingest_bad_input.py.
            "negative_data_rejection": {"enabled": False},
        },
    }),
)


@pytest.fixture
def world(db):
    """One project with something behind every path: a prediction with an image and its
    task, a ready dataset version, a model version, a training run waiting for an external
    trainer, and a drift report."""
    project = factories.project(slug="digits")
    token = factories.user_with_role(Role.ADMIN, project)[1]
    app_token = factories.user_with_role(Role.APP, project)[1]
    response = factories.api_client(app_token).post(
        "/api/v1/projects/digits/predictions/",
        factories.prediction(0, confidence=0.3, input={"image": digit_png(np.zeros(64))}), format="json",
    )
    task_id = response.json()["results"][0]["task_id"]
    dataset = datasets.dataset_version_create(project=project)
    datasets.dataset_version_build(version_id=dataset.pk)
    ModelVersion.objects.create(project=project, name="run-1", source=ModelSource.TRAINED)
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="waiting",
                                     trigger="manual", trainer="external")
    report = monitoring_services.drift_check_run(project=project)
    path = {"slug": "digits", "task_id": task_id, "run_id": run.pk, "report_id": report.pk,
            "version": dataset.number, "a": dataset.number, "b": dataset.number,
            "name": "run-1", "prediction_id": "p-0"}
    return {"token": token, "path": path}


@pytest.fixture
def keep_connection():
    # The test's transaction lives on its one connection, which Django's WSGI handler would
    # close around each request. Django's test client unhooks the same handlers, but hooks
    # them back after each of its own requests: so this runs after `world`.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Derandomized, with no example database: the suite sends the same cases on every machine,
# so a run that passed here passes in CI; the cases change when the schema does.
@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          database=None)
def test_every_operation_answers_as_its_schema_says(case, world, keep_connection):
    # Valid path parameters point at the world's rows, so requests get past the lookup
    # into the view; invalid ones (a generated negative case) are sent as generated.
    component = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
    if case.path_parameters and (component is None or component.mode.is_positive):
        case.path_parameters = {name: world["path"].get(name, value) for name, value in case.path_parameters.items()}
    case.call_and_validate(headers={"Authorization": f"Token {world['token']}"})
