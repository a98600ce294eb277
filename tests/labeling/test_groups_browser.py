"""The group workspace in a real browser: an annotator labels a group of digits with one
member taken out, with the keyboard only; the labels are stored and the member taken out
is back in the queue."""

import numpy as np
import pytest

from accounts.models import Role
from labeling import group_services
from labeling.models import Annotation, Group, Label, Task
from sim.demo import digit_png, load_digits_split
from tests import factories
from tests.browser import browser_page, log_in, screenshot
from tests.live import LiveService

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _one_group_of_threes_and_a_seven():
    """Five 3s and one 7, embedded by their pixels: one group whose odd one is the 7."""
    project = factories.project(features=[], labeling={"gold_rate": 0.0, "grouping": {"target_size": 6}})
    app = factories.api_client(factories.user_with_role(Role.APP, project)[1])
    data, target = load_digits_split()
    threes = [i for i in range(len(target)) if target[i] == "3"][:5]
    seven = next(i for i in range(len(target)) if target[i] == "7")
    items = [{"id": f"digit-{i}", "model_version": "v1", "label": "3", "confidence": 0.5,
              "input": {"image": digit_png(np.asarray(data[i]))}, "embedding": [float(v) for v in data[i]]}
             for i in [*threes, seven]]
    assert app.post("/api/v1/projects/digits/predictions/", {"predictions": items}, format="json").status_code == 201
    assert group_services.groups_build(project=project).groups == 1
    return project, f"digit-{seven}"


@pytest.mark.parametrize(("width", "name"), [(1366, "desktop"), (390, "narrow")])
def test_an_annotator_labels_a_group_taking_the_odd_one_out_with_the_keyboard(width, name):
    project, seven = _one_group_of_threes_and_a_seven()
    user, _ = factories.user_with_role(Role.ANNOTATOR, project, username="ann", password="a-long-password-1")
    group = Group.objects.get()
    with LiveService() as service, browser_page(width=width) as page:
        log_in(page, service.url, "ann", "a-long-password-1", next_path="/label/groups/")
        page.wait_for_url(f"{service.url}/label/groups/digits/")
        page.wait_for_selector(f"#stage[data-group='{group.pk}'] .member img")
        page.wait_for_function("[...document.querySelectorAll('.member img')].every(img => img.naturalWidth > 0)")
        assert page.inner_text("#suggested-label") == "3"
        first = page.get_attribute(".member >> nth=0", "data-task")
        # The odd one is first and marked; Space takes it out, u undoes that, Space again.
        assert "atypical" in page.get_attribute(".member >> nth=0", "class")
        page.keyboard.press(" ")
        page.wait_for_selector(".member.out")
        page.keyboard.press("u")
        page.wait_for_function("document.querySelectorAll('.member.out').length === 0")
        page.keyboard.press(" ")
        page.wait_for_selector(".member.out")
        screenshot(page, f"label-groups-{name}")
        with page.expect_response(lambda r: r.url.endswith("/annotations/") and r.status == 201):
            page.keyboard.press("3")
        page.wait_for_function("document.querySelector('#stage').dataset.group === ''")

    excluded = Task.objects.get(pk=int(first))
    assert excluded.prediction.external_id == seven
    assert (excluded.status, excluded.group_id, excluded.grouping_excluded) == ("open", None, True)
    labeled = Task.objects.filter(group=group)
    assert labeled.count() == 5 and set(labeled.values_list("status", flat=True)) == {"done"}
    assert set(Label.objects.filter(is_current=True).values_list("label", "source")) == {("3", "group")}
    assert Label.objects.filter(is_current=True).count() == 5
    assert Annotation.objects.filter(user=user, group=group).count() == 5
    assert not Annotation.objects.filter(task=excluded).exists()
