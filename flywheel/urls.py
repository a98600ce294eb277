from django.urls import path

from flywheel.apis import datasets, ingest, projects, training

urlpatterns = [
    path("projects/", projects.ProjectListApi.as_view(), name="project-list"),
    path("projects/<slug:slug>/", projects.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<slug:slug>/stats/", projects.ProjectStatsApi.as_view(), name="project-stats"),
    path("projects/<slug:slug>/predictions/", ingest.PredictionListApi.as_view(), name="prediction-list"),
    path("projects/<slug:slug>/feedback/", ingest.FeedbackListApi.as_view(), name="feedback-list"),
    path("projects/<slug:slug>/predictions/<path:prediction_id>/", ingest.PredictionDetailApi.as_view(),
         name="prediction-detail"),
    path("projects/<slug:slug>/datasets/", datasets.DatasetListApi.as_view(), name="dataset-list"),
    path("projects/<slug:slug>/datasets/<int:version>/", datasets.DatasetDetailApi.as_view(), name="dataset-detail"),
    path("projects/<slug:slug>/datasets/<int:version>/retry/", datasets.DatasetRetryApi.as_view(),
         name="dataset-retry"),
    path("projects/<slug:slug>/datasets/<int:a>/diff/<int:b>/", datasets.DatasetDiffApi.as_view(), name="dataset-diff"),
    path("projects/<slug:slug>/datasets/<int:version>/export/jsonl/", datasets.DatasetExportApi.as_view(),
         {"fmt": "jsonl"}, name="dataset-export-jsonl"),
    path("projects/<slug:slug>/datasets/<int:version>/export/csv/", datasets.DatasetExportApi.as_view(),
         {"fmt": "csv"}, name="dataset-export-csv"),
    path("projects/<slug:slug>/training-runs/", training.TrainingRunListApi.as_view(), name="training-run-list"),
    path("projects/<slug:slug>/training-runs/<int:run_id>/", training.TrainingRunDetailApi.as_view(),
         name="training-run-detail"),
    path("training-runs/<int:run_id>/complete/", training.TrainingRunCompleteApi.as_view(),
         name="training-run-complete"),
    path("projects/<slug:slug>/models/", training.ModelListApi.as_view(), name="model-list"),
    path("projects/<slug:slug>/models/rollback/", training.ModelRollbackApi.as_view(), name="model-rollback"),
    path("projects/<slug:slug>/models/promotions/", training.PromotionListApi.as_view(), name="model-promotions"),
    path("projects/<slug:slug>/models/<str:name>/promote/", training.ModelPromoteApi.as_view(), name="model-promote"),
    path("projects/<slug:slug>/models/<str:name>/artifact/", training.ModelArtifactApi.as_view(),
         name="model-artifact"),
]
