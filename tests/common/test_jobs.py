"""common.jobs: the leased-job pattern dataset builds and training stages share."""

from datetime import timedelta

import pytest
from django.utils import timezone

from common.jobs import Backoff, Lease, Superseded
from flywheel.datasets import services as datasets
from flywheel.models import DatasetVersion


def test_backoff_doubles_from_its_base_up_to_its_cap():
    backoff = Backoff(base_seconds=10, max_seconds=300)
    assert [backoff.seconds(n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


@pytest.fixture
def version(project):
    return datasets.dataset_version_create(project=project, note="lease")


def test_a_lease_is_held_until_its_heartbeat_goes_stale(version, settings):
    lease = Lease(DatasetVersion, token_field="build_token", stale_setting="FLYWHEEL_DATASET_STALE_SECONDS")
    now = timezone.now()
    DatasetVersion.objects.filter(pk=version.pk).update(build_token="t1", heartbeat_at=now)
    version.refresh_from_db()
    assert lease.is_held(version, now + timedelta(seconds=settings.FLYWHEEL_DATASET_STALE_SECONDS - 1))
    assert not lease.is_held(version, now + timedelta(seconds=settings.FLYWHEEL_DATASET_STALE_SECONDS + 1))
    later = now + timedelta(seconds=settings.FLYWHEEL_DATASET_STALE_SECONDS + 1)
    assert DatasetVersion.objects.filter(lease.stale_q(later), pk=version.pk).exists()
    assert not DatasetVersion.objects.filter(lease.stale_q(now), pk=version.pk).exists()


def test_only_the_holder_writes_and_a_superseded_attempt_is_told(version):
    lease = Lease(DatasetVersion, token_field="build_token", stale_setting="FLYWHEEL_DATASET_STALE_SECONDS")
    DatasetVersion.objects.filter(pk=version.pk).update(build_token="mine")
    lease.update_if_held(version.pk, "mine", phase="reading")
    with pytest.raises(Superseded):
        lease.update_if_held(version.pk, "someone-else", phase="uploading")
    with pytest.raises(Superseded):
        lease.update_if_held(version.pk, "mine", where={"status": "ready"}, phase="uploading")
    assert DatasetVersion.objects.get(pk=version.pk).phase == "reading"
