from django.apps import AppConfig


class FlywheelConfig(AppConfig):
    name = "flywheel"
    verbose_name = "Flywheel: projects, ingestion, datasets, training"

    def ready(self):
        # flywheel drives monitoring from above: it feeds profiles before checks, turns
        # dataset versions into references, and fills the ops dashboard's other panels.
        from flywheel import ops_panels, tasks  # noqa: F401 - tasks: registered for common.enqueue
        from flywheel.ingest import profiling
        from flywheel.training.selectors import estimated_accuracy_periods
        from monitoring import hooks

        hooks.profiles_sync_register(profiling.profiles_sync)
        hooks.reference_from_dataset_version_register(profiling.drift_reference_from_dataset_version)
        hooks.estimated_accuracy_register(estimated_accuracy_periods)
        ops_panels.register()
