"""Projects, model versions and the predictions apps log."""

import secrets
import uuid

from django.conf import settings
from django.db import models

from common.models import TimeStampedModel


class TaskType(models.TextChoices):
    SINGLE_LABEL = "single_label", "Single-label classification"


class FeatureType(models.TextChoices):
    NUMERIC = "numeric", "Numeric"
    CATEGORICAL = "categorical", "Categorical"


def _new_salt() -> str:
    return secrets.token_hex(16)


class Project(TimeStampedModel):
    slug = models.SlugField(max_length=50, unique=True, help_text="URL name of the project.")
    name = models.CharField(max_length=200)
    task_type = models.CharField(max_length=32, choices=TaskType.choices, default=TaskType.SINGLE_LABEL)
    labels = models.JSONField(help_text="The label set, in display order.")
    features = models.JSONField(
        default=list, blank=True,
        help_text='Feature schema: [{"name": ..., "type": "numeric"|"categorical"}]; '
                  "inferred from the first predictions when empty.",
    )
    routing = models.JSONField(default=dict, blank=True, help_text="Routing policy (see RoutingPolicy).")
    retraining = models.JSONField(default=dict, blank=True, help_text="Retraining policy.")
    drift = models.JSONField(default=dict, blank=True, help_text="Drift policy.")
    feedback = models.JSONField(default=dict, blank=True, help_text="When implicit feedback becomes a label.")
    labeling = models.JSONField(default=dict, blank=True,
                                help_text="Labeling policy: gold_rate, min_agreement (see labeling.policy).")
    slices = models.JSONField(
        default=list, blank=True,
        help_text="Metadata keys whose values are reported as slices (accuracy, gate).",
    )
    retention = models.JSONField(default=dict, blank=True,
                                 help_text="Retention policy: raw_days, archive (see flywheel.retention.policy).")
    audit_salt = models.CharField(
        max_length=32, default=_new_salt, editable=False,
        help_text="Keys the audit sample draw, so apps cannot predict which ids are audited.",
    )

    def __str__(self) -> str:
        return self.slug


class ModelSource(models.TextChoices):
    EXTERNAL = "external", "Logged by an app"
    TRAINED = "trained", "Trained here"


class ModelVersion(TimeStampedModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=64, help_text="Version name as apps send it, e.g. v3.")
    source = models.CharField(max_length=16, choices=ModelSource.choices, default=ModelSource.EXTERNAL)
    artifact_uri = models.CharField(max_length=500, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the artifact's bytes.")
    libraries = models.JSONField(default=dict, blank=True, help_text="Library versions the artifact needs to load.")
    trainer = models.CharField(max_length=32, blank=True, help_text="The trainer plug-in that made it.")
    dataset_version = models.ForeignKey("flywheel.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="model_versions", help_text="The data it was trained on.")
    metrics = models.JSONField(default=dict, blank=True, help_text="On the project's frozen evaluation set.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="model_version_unique_name")]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.name}"


class IngestBatch(models.Model):
    """One accepted ingestion request. Later stages (profiles) consume batches exactly once
    by marking them, which needs no broker and survives a dead worker."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    received_at = models.DateTimeField()
    first_prediction_id = models.BigIntegerField(null=True, blank=True,
                                                 help_text="Smallest prediction id this request created.")
    last_prediction_id = models.BigIntegerField(null=True, blank=True,
                                                help_text="Largest prediction id this request created.")
    # Its predictions' created_at span: readers of a batch's rows name it so that PostgreSQL
    # reads only the partitions of those weeks (flywheel.partitions). Empty on batches
    # recorded before it was kept.
    first_created_at = models.DateTimeField(null=True, blank=True,
                                            help_text="Earliest created_at of the predictions it created.")
    last_created_at = models.DateTimeField(null=True, blank=True,
                                           help_text="Latest created_at of the predictions it created.")
    profiled_at = models.DateTimeField(null=True, blank=True,
                                       help_text="When its predictions were added to the drift profiles.")

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="ingestbatch_unprofiled", condition=models.Q(profiled_at__isnull=True)),
        ]


class Prediction(models.Model):
    """One prediction a model made in production. Append-only: never updated in place."""

    id = models.BigAutoField(primary_key=True)
    # The foreign keys of this table are not enforced by PostgreSQL: each would cost a
    # lookup and a lock on the parent row for every inserted prediction (measured: 50 us of
    # database time per row with them, about 20 without). Ingestion is the only writer and
    # resolves project, version and batch in the same transaction; deletes cascade in Django.
    # No index of its own: the unique (project, external_id) index serves project lookups.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="predictions", db_index=False,
                                db_constraint=False)
    external_id = models.CharField(max_length=128, help_text="The app's id: the idempotency key.")
    # Indexes cost every insert; per-version reads go through the much smaller audit sample.
    model_version = models.ForeignKey(ModelVersion, on_delete=models.RESTRICT, related_name="predictions",
                                      db_index=False, db_constraint=False)
    label = models.CharField(max_length=64, help_text="The label the model predicted.")
    confidence = models.FloatField(help_text="The model's probability for its label.")
    probabilities = models.JSONField(null=True, blank=True)
    least_confidence = models.FloatField(help_text="1 - p(top label).")
    margin = models.FloatField(help_text="1 - (p(top) - p(runner-up)).")
    entropy = models.FloatField(help_text="Normalized entropy of the label distribution.")
    features = models.JSONField(default=dict, blank=True)
    input = models.JSONField(default=dict, blank=True, help_text="What an annotator sees: text, image, image_url.")
    metadata = models.JSONField(default=dict, blank=True)
    # Bytes, not JSON: 4,096 floats are 16 KiB this way and about three times that as text.
    embedding = models.BinaryField(
        null=True, blank=True,
        help_text="The app's own representation of the input (e.g. a text or image embedding), as little-endian "
                  "float32 values; what group labeling and similar tasks compare first.")
    audit = models.BooleanField(default=False, help_text="Drawn into the random audit sample.")
    # Unindexed: a batch's predictions are found by the id range recorded on the batch.
    batch = models.ForeignKey(IngestBatch, on_delete=models.RESTRICT, related_name="predictions", db_index=False,
                              db_constraint=False)
    created_at = models.DateTimeField(help_text="When the model made the prediction.")
    received_at = models.DateTimeField(help_text="When the service stored it.")

    class Meta:
        # On PostgreSQL the table is partitioned by week of created_at (flywheel.partitions,
        # migration 0009): its primary key there is (id, created_at), ids still come from one
        # sequence, and the unique (project, external_id) below lives in the unpartitioned
        # flywheel_predictionkey table that ingestion writes in the same statement (a unique
        # index on a partitioned table must include created_at, which would let a retry with
        # another created_at in). SQLite keeps this constraint as written.
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="prediction_unique_external_id"),
            models.CheckConstraint(condition=models.Q(confidence__gte=0.0, confidence__lte=1.0),
                                   name="prediction_confidence_unit"),
        ]
        indexes = [
            # Production accuracy reads the audit sample per model version; a partial index
            # keeps the other 98% of inserts free of it.
            # With the id as its last column, the audit sample's joins to labels and its counts
            # read the index alone (index-only scans), not every audited row of history.
            models.Index(fields=["project", "model_version", "id"], name="prediction_audit_sample_ids",
                         condition=models.Q(audit=True)),
        ]

    def __str__(self) -> str:
        return self.external_id

    def uncertainty_score(self, method: str) -> float:
        return getattr(self, method)


class RoutingBudget(models.Model):
    """How much of a project's daily budget of uncertainty-routed tasks is spent."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "day"], name="routing_budget_unique_day")]


class FeedbackKind(models.TextChoices):
    CONFIRM = "confirm", "The end user kept the prediction"
    CORRECT = "correct", "The end user changed it to another label"
    REJECT = "reject", "The end user threw it away: the label is wrong, the right one unknown"


class Feedback(models.Model):
    """An implicit signal from an app's end user about one prediction: a weak label, kept
    apart from annotators' labels. Append-only."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="feedback_items")
    # Unenforced: predictions are partitioned by time on PostgreSQL (flywheel.partitions), and a
    # foreign key into a partitioned table must name the partition column too. Django cascades.
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="feedback", db_constraint=False)
    external_id = models.CharField(max_length=128, null=True, blank=True,
                                   help_text="The app's id for this feedback: the idempotency key.")
    kind = models.CharField(max_length=8, choices=FeedbackKind.choices)
    label = models.CharField(max_length=64, blank=True, help_text="The user's label (correct only).")
    user = models.CharField(max_length=128, blank=True, help_text="The app's id of the end user.")
    created_at = models.DateTimeField(help_text="When the end user acted.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="feedback_unique_external_id",
                                    condition=models.Q(external_id__isnull=False)),
            models.CheckConstraint(condition=~models.Q(kind="correct") | ~models.Q(label=""),
                                   name="feedback_correct_has_label"),
        ]


# --- Dataset versions ----------------------------------------------------------------------------


class DatasetStatus(models.TextChoices):
    BUILDING = "building", "Building"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class DatasetVersion(TimeStampedModel):
    """One immutable dataset version of a project: its rows (every prediction with a current
    resolved label) live on object storage as content-addressed Parquet shards named by a
    manifest; this row tracks the build and records the manifest's hash."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False,
                           help_text="Written into the manifest: tells this version's manifest from any other.")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_versions")
    number = models.PositiveIntegerField(help_text="Version number within the project: 1, 2, 3...")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                               help_text="The ready version this one was built from (its shards are reused).")
    status = models.CharField(max_length=16, choices=DatasetStatus.choices, default=DatasetStatus.BUILDING)
    note = models.CharField(max_length=500, blank=True)
    trigger = models.CharField(max_length=32, default="manual",
                               help_text="What asked for the version: manual (the API) or a retraining trigger.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    manifest_key = models.CharField(max_length=500, blank=True, help_text="Storage key of the manifest.")
    manifest_uri = models.CharField(max_length=1000, blank=True)
    manifest_sha256 = models.CharField(max_length=64, blank=True,
                                       help_text="SHA-256 of the manifest's bytes; readers verify against it.")
    counts = models.JSONField(default=dict, blank=True,
                              help_text="rows, by_label, by_source, by_split (from the manifest).")
    stats = models.JSONField(default=dict, blank=True,
                             help_text="What the build wrote: shards and bytes in total, uploaded and reused.")
    # Progress of the build, kept on the row so the API and the dashboard can show it and a
    # dead worker is noticed (its heartbeat stops).
    phase = models.CharField(max_length=32, blank=True, help_text="queued, reading, uploading, publishing or retrying.")
    progress = models.FloatField(default=0.0, help_text="Share of the build done, 0-1.")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the build.")
    build_token = models.CharField(max_length=32, blank=True,
                                   help_text="The build attempt that holds the version; empty when none does.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Build attempts started.")
    error = models.TextField(blank=True, help_text="Why the build failed.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="dataset_version_unique_number"),
            # A ready version always names its manifest by hash: readers rely on it.
            models.CheckConstraint(
                condition=~models.Q(status="ready") | (~models.Q(manifest_sha256="") & ~models.Q(manifest_key="")),
                name="dataset_version_ready_has_manifest",
            ),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="dataset_version_building",
                                condition=models.Q(status="building"))]

    def __str__(self) -> str:
        return f"{self.project_id}:v{self.number}"



# --- The model registry and training runs ----------------------------------------------------------


class ModelAliasName(models.TextChoices):
    CHAMPION = "champion", "Champion: the model serving production"
    CHALLENGER = "challenger", "Challenger: the latest candidate"


class ModelAlias(TimeStampedModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_aliases")
    alias = models.CharField(max_length=16, choices=ModelAliasName.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.RESTRICT, related_name="aliases")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "alias"], name="model_alias_unique")]


class PromotionAction(models.TextChoices):
    PROMOTE = "promote", "Promote"
    ROLLBACK = "rollback", "Roll back"


class ModelPromotion(models.Model):
    """Every change of champion, with who or what made it: rollback walks this history."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="promotions")
    action = models.CharField(max_length=16, choices=PromotionAction.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.RESTRICT, related_name="+",
                                      help_text="The champion after this change.")
    previous = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.RESTRICT, related_name="+",
                                 help_text="The champion before it.")
    training_run = models.ForeignKey("flywheel.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_name = models.CharField(max_length=150, help_text="Who, or 'gate' when a training run promoted it.")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class TrainingStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class TrainingStage(models.TextChoices):
    DATASET = "dataset", "Building the dataset version"
    TRAIN = "train", "Training"
    WAITING = "waiting", "Waiting for the external trainer"
    EVALUATE = "evaluate", "Evaluating"
    GATE = "gate", "Deciding"
    PROMOTE = "promote", "Promoting"
    DONE = "done", "Done"


class TrainingRun(TimeStampedModel):
    """One retraining of a project's model: dataset, train, evaluate, gate, promote. At most
    one runs at a time per project; triggers that arrive meanwhile gather in one queued run."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    number = models.PositiveIntegerField(help_text="Run number within the project.")
    status = models.CharField(max_length=16, choices=TrainingStatus.choices, default=TrainingStatus.QUEUED)
    stage = models.CharField(max_length=16, choices=TrainingStage.choices, default=TrainingStage.DATASET)
    trigger = models.CharField(max_length=32, help_text="What started it: manual, new_labels, drift or schedule.")
    triggers = models.JSONField(default=list, help_text="Every trigger it answers, with when and why.")
    requested_dataset = models.ForeignKey("flywheel.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="+", help_text="A version asked for instead of a new one.")
    dataset_version = models.ForeignKey("flywheel.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="training_runs")
    eval_dataset_version = models.ForeignKey("flywheel.DatasetVersion", null=True, blank=True,
                                             on_delete=models.SET_NULL, related_name="+",
                                             help_text="The pinned version whose test split it was judged on.")
    trainer = models.CharField(max_length=32)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="training_runs", help_text="The candidate it trained.")
    champion = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 help_text="The champion it was compared with.")
    metrics = models.JSONField(default=dict, blank=True, help_text="candidate, champion and baseline metrics.")
    gate = models.JSONField(default=dict, blank=True, help_text='{"passed": bool, "reasons": [...]}')
    promoted = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    progress = models.FloatField(default=0.0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    token = models.CharField(max_length=32, blank=True, help_text="The attempt that holds the current stage.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Stage attempts started.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="training_run_unique_number"),
            models.UniqueConstraint(fields=["project"], condition=models.Q(status="running"),
                                    name="training_run_one_running"),
            models.UniqueConstraint(fields=["project"], condition=models.Q(status="queued"),
                                    name="training_run_one_queued"),
        ]


# --- Shadow mode ------------------------------------------------------------------------------------


class ShadowState(models.TextChoices):
    ACTIVE = "active", "In shadow: scored on every new prediction and compared with the champion"
    STOPPED = "stopped", "Taken out of shadow by a person"
    RETIRED = "retired", "Taken out of shadow by the live gate: significantly worse than the champion"
    PROMOTED = "promoted", "Promoted to champion by the live gate"


class ShadowModel(TimeStampedModel):
    """A model trained here that Flywheel runs in shadow: it scores every new prediction's
    features beside the champion, off the ingestion path, and the live gate judges it.
    One row per version; putting it back in shadow starts it afresh."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="shadows")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="shadows")
    state = models.CharField(max_length=16, choices=ShadowState.choices, default=ShadowState.ACTIVE)
    training_run = models.ForeignKey("flywheel.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+", help_text="The run whose candidate went into shadow.")
    scored_floor = models.BigIntegerField(
        default=0, help_text="Every prediction with an id up to this is scored, or predates the shadow.")
    started_at = models.DateTimeField()
    started_by = models.CharField(max_length=150, help_text="Who put it in shadow, or 'gate' for a training run.")
    ended_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why it went into shadow, or why it left.")
    verdict = models.CharField(max_length=16, blank=True, help_text="The live gate's last verdict: better, worse "
                                                                    "or undecided.")
    reasons = models.JSONField(default=list, blank=True, help_text="The live gate's reasons for it.")
    evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "model_version"], name="shadow_model_unique")]
        indexes = [models.Index(fields=["state"], name="shadow_model_active", condition=models.Q(state="active"))]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.model_version_id} ({self.state})"


class ShadowPrediction(models.Model):
    """What a shadow model (a challenger running beside the champion without serving anyone)
    answered for a prediction the champion served. Kept apart from predictions: it is never
    production data (drift, feedback rates, production accuracy and datasets read only
    predictions). Append-only."""

    id = models.BigAutoField(primary_key=True)
    # Unenforced foreign keys, as on predictions: ingestion resolves them in its transaction,
    # and each enforced key would cost a lookup and a lock per row.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="shadow_predictions",
                                   db_index=False, db_constraint=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+", db_index=False,
                                      db_constraint=False, help_text="The shadow model.")
    champion = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+", db_index=False,
                                 db_constraint=False, help_text="The model that served the prediction.")
    label = models.CharField(max_length=64, help_text="The shadow model's label.")
    confidence = models.FloatField()
    probabilities = models.JSONField(null=True, blank=True)
    agrees = models.BooleanField(help_text="Whether it gave the champion's label.")
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prediction", "model_version"], name="shadow_prediction_unique"),
            models.CheckConstraint(condition=models.Q(confidence__gte=0.0, confidence__lte=1.0),
                                   name="shadow_prediction_confidence_unit"),
        ]
        # The live comparison reads a shadow model's pairs with their champion.
        indexes = [models.Index(fields=["model_version", "champion"], name="shadow_prediction_pairs")]


class Disagreement(models.Model):
    """A prediction some shadow model disagreed with the champion on, and what routing
    decided for it: once per prediction, whatever the number of shadows. Its rate is the
    probability its label was sought with, the inverse weight of that label in the estimate
    of the accuracy difference (flywheel.training.live)."""

    prediction = models.OneToOneField(Prediction, on_delete=models.CASCADE, primary_key=True, db_constraint=False,
                                      related_name="disagreement")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    rate = models.FloatField(help_text="The routing policy's disagreement_rate when it was drawn.")
    drawn = models.BooleanField(help_text="Drawn at that rate for a label.")
    reason = models.CharField(max_length=32, help_text="What routing did: disagreement, not_drawn, "
                                                       "budget_exhausted, labeled, or the reason of the task "
                                                       "it already had.")
    task_id = models.BigIntegerField(null=True, blank=True, help_text="The task its label comes from.")
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["project"], name="disagreement_project")]


# --- Retention: the raw prediction log's age limit, and its archive ---------------------------------


class RetentionStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class RetentionRun(TimeStampedModel):
    """One project's retention on one UTC day: archive the predictions past the policy's
    raw_days that the loop no longer needs, then remove them. A leased job (common.jobs):
    one attempt at a time holds it; a day's succeeded run makes a second one a no-op."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="retention_runs")
    day = models.DateField(help_text="The UTC day the run is for.")
    cutoff = models.DateTimeField(null=True, blank=True, help_text="Predictions made before this were considered.")
    status = models.CharField(max_length=16, choices=RetentionStatus.choices, default=RetentionStatus.RUNNING)
    token = models.CharField(max_length=32, blank=True, help_text="The attempt that holds the run.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    archived = models.BigIntegerField(default=0, help_text="Predictions written to the archive.")
    removed = models.BigIntegerField(default=0, help_text="Predictions removed from the database.")
    held = models.BigIntegerField(null=True, blank=True, help_text="Predictions the project held after the run.")
    partitions_dropped = models.JSONField(default=list, blank=True,
                                          help_text="Partitions of the predictions table detached and dropped.")
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "day"], name="retention_run_unique_day")]


class PredictionArchive(models.Model):
    """One Parquet part of the prediction archive: where a day's archived rows live, and a
    Bloom filter of their external ids. The filter is what lets a removed prediction's GET
    say where its row went without a row per removed prediction in the database (which
    would grow with history as the log did): about 10 bits per id, a 1% chance per part of
    a false match, which the lookup settles by reading the part's id column."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="archive_parts")
    run = models.ForeignKey(RetentionRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="parts")
    date = models.DateField(help_text="The UTC day its predictions were made (the Hive partition).")
    key = models.CharField(max_length=500,
                           help_text="Storage key: archive/<slug>/date=YYYY-MM-DD/part-<sha256>.parquet")
    sha256 = models.CharField(max_length=64)
    manifest_key = models.CharField(max_length=500, help_text="The day's manifest that names this part.")
    rows = models.BigIntegerField()
    bytes = models.BigIntegerField()
    min_row_id = models.BigIntegerField()
    max_row_id = models.BigIntegerField()
    bloom_bits = models.BigIntegerField(help_text="Length of the Bloom filter in bits.")
    bloom = models.BinaryField(help_text="Bloom filter of the part's external ids (flywheel.retention.bloom).")
    removed = models.BigIntegerField(default=0, help_text="Of its rows, how many were removed from the database.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="prediction_archive_unique_key")]
