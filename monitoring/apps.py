from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring: profiles, drift, alerts, metrics"

    def ready(self):
        # Register the app's Celery tasks, which common.enqueue sends by name.
        from monitoring import tasks  # noqa: F401
