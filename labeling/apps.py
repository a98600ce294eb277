from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling: queue, annotations, resolved labels"

    def ready(self):
        # Register the app's Celery tasks, which common.enqueue sends by name.
        from labeling import tasks  # noqa: F401
