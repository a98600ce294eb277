from django.urls import path

from flywheel import apis

urlpatterns = [
    path("projects/", apis.ProjectListApi.as_view(), name="project-list"),
    path("projects/<slug:slug>/", apis.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<slug:slug>/stats/", apis.ProjectStatsApi.as_view(), name="project-stats"),
    path("projects/<slug:slug>/predictions/", apis.PredictionListApi.as_view(), name="prediction-list"),
    path("projects/<slug:slug>/feedback/", apis.FeedbackListApi.as_view(), name="feedback-list"),
    path("projects/<slug:slug>/predictions/<path:prediction_id>/", apis.PredictionDetailApi.as_view(),
         name="prediction-detail"),
    path("projects/<slug:slug>/datasets/", apis.DatasetListApi.as_view(), name="dataset-list"),
    path("projects/<slug:slug>/datasets/<int:version>/", apis.DatasetDetailApi.as_view(), name="dataset-detail"),
    path("projects/<slug:slug>/datasets/<int:version>/retry/", apis.DatasetRetryApi.as_view(),
         name="dataset-retry"),
    path("projects/<slug:slug>/datasets/<int:a>/diff/<int:b>/", apis.DatasetDiffApi.as_view(), name="dataset-diff"),
    path("projects/<slug:slug>/datasets/<int:version>/export/jsonl/", apis.DatasetExportApi.as_view(),
         {"fmt": "jsonl"}, name="dataset-export-jsonl"),
    path("projects/<slug:slug>/datasets/<int:version>/export/csv/", apis.DatasetExportApi.as_view(),
         {"fmt": "csv"}, name="dataset-export-csv"),
    path("projects/<slug:slug>/training-runs/", apis.TrainingRunListApi.as_view(), name="training-run-list"),
    path("projects/<slug:slug>/training-runs/<int:run_id>/", apis.TrainingRunDetailApi.as_view(),
         name="training-run-detail"),
    path("training-runs/<int:run_id>/complete/", apis.TrainingRunCompleteApi.as_view(), name="training-run-complete"),
    path("projects/<slug:slug>/models/", apis.ModelListApi.as_view(), name="model-list"),
    path("projects/<slug:slug>/models/rollback/", apis.ModelRollbackApi.as_view(), name="model-rollback"),
    path("projects/<slug:slug>/models/promotions/", apis.PromotionListApi.as_view(), name="model-promotions"),
    path("projects/<slug:slug>/models/<str:name>/promote/", apis.ModelPromoteApi.as_view(), name="model-promote"),
    path("projects/<slug:slug>/models/<str:name>/artifact/", apis.ModelArtifactApi.as_view(), name="model-artifact"),
]
