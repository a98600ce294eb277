import itertools

import pytest

from accounts.models import Role
from accounts.signals import clear_access_caches
from flywheel.ingest.services import model_version_cache_clear
from tests import factories
from tests.s3 import S3Server


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Each test starts with empty per-process caches: its rows are new even when ids repeat."""
    clear_access_caches()
    model_version_cache_clear()
    yield


@pytest.fixture(autouse=True)
def _storage_in_tmp(settings, tmp_path):
    """Object storage of every test is its own directory (the file backend), never var/."""
    settings.FLYWHEEL_STORAGE_BACKEND = "file"
    settings.FLYWHEEL_STORAGE_ROOT = tmp_path / "storage"


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto's server mode) for the whole run."""
    server = S3Server().start()
    yield server
    server.stop()


_buckets = itertools.count()


@pytest.fixture
def s3_bucket(s3_server, settings):
    """A fresh bucket on the local S3 server, with the service's storage settings pointed at it."""
    bucket = f"flywheel-test-{next(_buckets)}"
    s3_server.client().create_bucket(Bucket=bucket)
    for name, value in s3_server.settings_for(bucket).items():
        setattr(settings, name, value)
    return bucket


@pytest.fixture
def project(db):
    return factories.project()


@pytest.fixture
def other_project(db):
    return factories.project(slug="other")


@pytest.fixture
def app_token(project):
    return factories.user_with_role(Role.APP, project)[1]


@pytest.fixture
def app_client(app_token):
    return factories.api_client(app_token)


@pytest.fixture
def ops_client(project):
    return factories.api_client(factories.user_with_role(Role.OPS, project)[1])


@pytest.fixture
def admin_client(db):
    return factories.api_client(factories.user_with_role(Role.ADMIN)[1])


@pytest.fixture
def anon_client():
    return factories.api_client()
