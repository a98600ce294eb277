"""The flywheel running by itself on real data, against the service, through the client:
an app serving the champion on held-out handwritten digits (with a shift injected midway),
end users who correct some of its mistakes, annotators who label the queue (and sometimes
err), drift checks, and retraining through the gate, round after round.

Run twice from the same seed, once routing by uncertainty and once at random with the same
labeling capacity, it answers what the flywheel is for: how many fewer labels uncertainty
routing needs to reach the accuracy random routing reaches. Run with grouping on, the
annotators label groups through the service's group endpoints under the same time budget
(`AnnotatorTime` says what a task and a group cost), and it answers what grouping buys.
Run in shadow mode, each round's candidate goes into shadow instead of being promoted on
the offline gate alone, and the live gate decides on live traffic: disagreement routing
(uncertainty routing's run) against the audit sample alone (random routing's run), in
labels to a verdict and wrong decisions. The rows may be the digits or a team's own data
(`Dataset.from_file`)."""

import base64
import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from flywheel.models import ShadowModel, ShadowState
from flywheel.training.shadow import live_gate_evaluate, shadow_score
from flywheel.training.trainers import Model, load_model
from flywheel_client import Client, FlywheelError

FEATURES = [f"px{i}" for i in range(64)]
LABELS = [str(i) for i in range(10)]
STRATEGIES = ("uncertainty", "random")
SHIFTS = ("noise", "class_mix")


@dataclass(frozen=True)
class AnnotatorTime:
    """What a simulated annotator's work costs, in seconds, and how well they fix a group.
    A single task is read and labeled in about 3 s. A group is taken in at a glance (a few
    seconds), then each member is looked at briefly, to spot the ones that do not belong; a
    member that does not belong is spotted (and taken out) with `misfit_spotted`, and one
    missed gets the group's label."""

    single_task_s: float = 3.0
    group_s: float = 4.0
    per_member_s: float = 0.4
    misfit_spotted: float = 0.9

    def group_cost(self, size: int) -> float:
        return self.group_s + self.per_member_s * size


@dataclass(frozen=True)
class SimulationConfig:
    rounds: int = 12
    traffic: int = 150  # predictions per round
    labels_per_round: int = 20  # what the annotators manage per round
    annotator_error: float = 0.05  # share of annotations that are wrong
    feedback_share: float = 0.3  # share of wrong predictions end users correct
    shift_round: int | None = None  # from this round on, traffic is shifted (default: midway, never round 1)
    # What changes: "noise" (scanned worse: pixel noise added) or "class_mix" (what users
    # write changes: a few digits become most of the traffic, pixels as they were).
    shift: str = "noise"
    shift_noise: float = 2.0  # standard deviation of the pixel noise added (pixels are 0-16)
    shift_classes: tuple[str, ...] = ("3", "5", "8")  # class_mix: the digits that take over...
    shift_class_share: float = 0.6  # ...and their share of the traffic (at first 3 in 10)
    initial_labels: int = 60  # the small slice the first model learns from
    # Digits with known answers, the gate's evaluation set: half marked at the start, half
    # (as the shifted traffic looks) when the shift begins, as ops would once drift shows.
    gold: int = 400
    test: int = 300  # held out to measure the champion's true accuracy
    # Uncertainty routing sends predictions whose margin score reaches this: chosen so that
    # about what annotators label in a round is routed, not a backlog that goes stale.
    uncertainty_threshold: float = 0.75
    # Uncertainty routing's audit sample (what production accuracy is estimated from), as a
    # share of the labeling capacity: 2% of 150 predictions is 3 of 20 labels a round. A
    # fixed share of traffic would, at more traffic, spend the whole capacity on the audit.
    audit_share: float = 0.15
    skip_resolved: bool = True  # RoutingPolicy.skip_resolved, for both strategies
    seed: int = 0
    # Grouping on: annotators label groups (and the single tasks left) within the time a
    # round's `labels_per_round` single tasks take. Uncertainty routing then sends every
    # prediction whose margin score reaches `grouping_threshold` (most uncertain first):
    # a team that labels several times faster can take more of the traffic.
    grouping: bool = False
    grouping_threshold: float = 0.0
    group_share: float = 0.75  # of the round's time, spent on groups first; the rest on single tasks
    # labeling.grouping.target_size, the service's default: with groups split where the
    # model's labels differ, the groups served first on queues like this one's kept 98-99%
    # of members with their group's majority at 20 a group, as at 10 (bench/grouping.py).
    group_target_size: int = 20
    group_check_rate: float = 0.1  # labeling.group_check_rate: group-labeled members checked individually
    annotator_time: AnnotatorTime = field(default_factory=AnnotatorTime)
    # Shadow mode: retraining.live_gate enabled, so a candidate that passes the offline gate
    # goes into shadow; Flywheel scores each round's traffic with it, routes the disagreements
    # (disagreement_rate 1.0; random routing's budget of 0 keeps them out of its queue, so
    # its live gate sees only the audit sample), and the live gate promotes or retires it.
    # While a challenger is in shadow no new one is trained; one still undecided after
    # `shadow_rounds` rounds is taken out by ops (held back) and training resumes.
    shadow: bool = False
    live_min_labels: int = 20  # retraining.live_gate.min_labels (the service's default, 100, is for real traffic)
    shadow_rounds: int = 6

    def __post_init__(self):
        if self.shift not in SHIFTS:
            raise ValueError(f"shift is one of {SHIFTS}")

    @property
    def shift_at(self) -> int:
        return self.shift_round if self.shift_round is not None else max(2, self.rounds // 2)

    @property
    def seconds_per_round(self) -> float:
        """The labeling time budget of a round, the same with grouping on or off."""
        return self.labels_per_round * self.annotator_time.single_task_s


@dataclass
class RoundResult:
    round: int
    labels: int  # annotations made so far (the labels spent)
    true_accuracy: float  # the champion's accuracy on held-out digits, as traffic looks now
    estimate: float | None  # production accuracy estimated from the round's audit labels
    low: float | None
    high: float | None
    drifted: bool | None
    drifted_fields: int
    champion: str
    promoted: bool
    shifted: bool
    # The last day's accuracy from confidence alone (calibrated on the audit labels), with
    # its interval and whether the audit agrees; None under 30 audit labels.
    label_free: dict | None = None
    # Annotator time and what it bought, so far: seconds spent (AnnotatorTime), predictions
    # given a label (by a group or a single task; checks relabel and are not counted).
    annotator_seconds: float = 0.0
    items_labeled: int = 0
    group_items: int = 0
    # Labels against the truth so far: group labels (members labeled by a group) and single
    # annotations; and group-label accuracy as the service estimated it from the checks
    # ({accuracy, low, high, n} from GET stats/ group_labels).
    group_label_accuracy: float | None = None
    group_label_estimate: dict | None = None
    single_label_accuracy: float | None = None
    # Where grouping's time went, so far (AnnotatorTime seconds): groups labeled and their
    # members, misfits (members whose truth is not the group's majority) and those missed,
    # groups given a slipped label, and the seconds spent on groups, on checks, on members
    # taken out (labeled again one by one) and on other single tasks.
    group_work: dict | None = None
    # Shadow mode: the challenger in shadow this round, as the live gate saw it
    # ({model, verdict, labeled, difference}), or None.
    shadow: dict | None = None


@dataclass
class ShadowDecision:
    """What became of one candidate in shadow: the live gate's verdict (`better`: promoted,
    `worse`: retired, `undecided`: held back after `shadow_rounds` rounds or at the end of
    the run), the labels it rested on, and the truth: the candidate's accuracy minus the
    champion's on the held-out digits as traffic looked when it was decided."""

    model: str
    champion: str
    started_round: int
    decided_round: int
    verdict: str
    labels: int  # the labels the verdict rested on: labeled disagreements, or audit labels without disagreement routing
    labeled: dict  # {"audit": n, "disagreement": m}, as the service counted them
    paired: int
    difference: dict  # the service's estimate {value, low, high}
    true_difference: float
    ended: str  # promoted, retired, held_back (ops took it out) or running (the run ended)


@dataclass
class SimulationResult:
    strategy: str
    project: str
    rounds: list[RoundResult] = field(default_factory=list)
    grouping: bool = False
    shadow_decisions: list[ShadowDecision] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.strategy} routing" + (", grouping on" if self.grouping else "")

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "grouping": self.grouping, "project": self.project,
                "rounds": [asdict(r) for r in self.rounds],
                "shadow_decisions": [asdict(d) for d in self.shadow_decisions]}


def digit_png(pixels: np.ndarray) -> str:
    """An 8x8 digit (values 0-16) as a base64 PNG, dark ink on white."""
    from PIL import Image

    grey = (255 - np.clip(pixels, 0, 16) * 255 / 16).astype(np.uint8).reshape(8, 8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class DataError(ValueError):
    """A data file the simulation cannot run on; the message names the column or row."""


@dataclass(frozen=True)
class Dataset:
    """Rows to simulate on: numeric features, their true labels, and each feature's range
    (declared to the project, and the scale of the noise shift)."""

    x: np.ndarray
    y: np.ndarray  # labels as strings
    features: list[str]
    low: np.ndarray
    high: np.ndarray
    images: bool = False  # the rows are 8x8 digits an annotator sees as a picture
    decimals: int = 6  # noisy values are rounded to this many decimals

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.y.tolist()), key=lambda v: (len(v), v))

    @classmethod
    def digits(cls) -> "Dataset":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return cls(x=digits.data, y=digits.target.astype(str), features=list(FEATURES), low=np.zeros(64),
                   high=np.full(64, 16.0), images=True, decimals=2)

    @classmethod
    def from_file(cls, path, *, label_column: str = "label") -> "Dataset":
        """A CSV or Parquet file (by its suffix): a label column and numeric feature columns."""
        import pyarrow as pa

        from flywheel.ingest.validation import FEATURE_NAME_RE

        path = Path(path)
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                table = pq.read_table(path)
            else:
                import pyarrow.csv as pacsv

                table = pacsv.read_csv(path)
        except FileNotFoundError as exc:
            raise DataError(f"{path}: no such file.") from exc
        except (pa.ArrowInvalid, OSError) as exc:
            kind = "Parquet" if path.suffix.lower() in (".parquet", ".pq") else "CSV"
            raise DataError(f"{path}: not a readable {kind} file ({exc}).") from exc
        if label_column not in table.column_names:
            raise DataError(f"{path}: no label column '{label_column}' (columns: {', '.join(table.column_names)}); "
                            "name it with --label-column.")
        names = [c for c in table.column_names if c != label_column]
        if not names:
            raise DataError(f"{path}: no feature columns beside '{label_column}'.")
        # An empty CSV cell reads as an empty string in a text column, as null in others.
        y = np.array(["" if v is None else str(v).strip() for v in table.column(label_column).to_pylist()])
        missing = y == ""
        if missing.any():
            raise DataError(f"{path}: row {int(np.argmax(missing)) + 1}: column '{label_column}' has no label.")
        columns = []
        for name in names:
            if not FEATURE_NAME_RE.match(name):
                raise DataError(f"{path}: column '{name}': a feature name is 1 to 64 letters, digits, '_', '.' or "
                                "'-', starting with a letter or '_'.")
            column = table.column(name)
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                    or pa.types.is_null(column.type)):
                first = next((i for i, v in enumerate(column.to_pylist()) if v is not None
                              and not _is_number(v)), 0)
                raise DataError(f"{path}: column '{name}' is not numeric (row {first + 1}: "
                                f"{column[first].as_py()!r}).")
            values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            bad = ~np.isfinite(values)
            if bad.any():
                raise DataError(f"{path}: row {int(np.argmax(bad)) + 1}: column '{name}' is empty or not a "
                                "finite number.")
            columns.append(values)
        x = np.column_stack(columns)
        if len(set(y.tolist())) < 2:
            raise DataError(f"{path}: column '{label_column}' holds fewer than two labels.")
        # A column that never varies still gets a range a project accepts (min below max).
        low, high = x.min(axis=0), x.max(axis=0)
        high = np.where(high > low, high, low + 1.0)
        return cls(x=x, y=y, features=names, low=low, high=high)


def _is_number(value) -> bool:
    try:
        return np.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class Digits:
    """The rows (scikit-learn's bundled digits unless a dataset is given), shuffled once by
    the seed and split: held-out test rows, gold rows, the initial slice, and the pool
    traffic is drawn from."""

    def __init__(self, config: SimulationConfig, dataset: Dataset | None = None):
        self.dataset = dataset or Dataset.digits()
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(len(self.dataset.y))
        self.x, self.y = self.dataset.x, self.dataset.y
        self.labels = self.dataset.labels
        cut = np.cumsum([config.test, config.gold, config.initial_labels])
        if cut[-1] + config.traffic > len(order):
            raise ValueError(f"{len(order)} rows are too few for {config.test} test, {config.gold} gold and "
                             f"{config.initial_labels} initial rows and a round of {config.traffic} predictions; "
                             "lower test, gold, initial labels or traffic.")
        self.test, self.gold, self.initial, self.pool = np.split(order, cut)

    def shifted(self, indices: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
        """The rows with noise added: `noise` is in sixteenths of each feature's range (a
        digit's pixel runs from 0 to 16), clipped to the range."""
        data = self.dataset
        scale = (data.high - data.low) / 16
        noisy = self.x[indices] + rng.normal(0, noise, (len(indices), self.x.shape[1])) * scale
        return np.clip(noisy, data.low, data.high).round(data.decimals)

    def shift_classes(self, config: SimulationConfig) -> list[str]:
        """The labels that take over in a class-mix shift: the configured ones the data has,
        else the first third of its labels."""
        present = [c for c in config.shift_classes if c in self.labels]
        return present or self.labels[: max(1, len(self.labels) // 3)]

    def class_weights(self, config: SimulationConfig) -> dict[str, float]:
        """Each label's share of the traffic after a class-mix shift."""
        taking_over = set(self.shift_classes(config))
        rest = [c for c in self.labels if c not in taking_over]
        if not rest:
            return {c: 1 / len(self.labels) for c in self.labels}
        return {c: config.shift_class_share / len(taking_over) if c in taking_over
                else (1 - config.shift_class_share) / len(rest) for c in self.labels}

    def mix_probabilities(self, indices: np.ndarray, config: SimulationConfig) -> np.ndarray:
        """Sampling probabilities over `indices` that give the class-mix shift's shares."""
        weights = self.class_weights(config)
        labels = self.y[indices]
        counts = {c: int(np.sum(labels == c)) for c in self.labels}
        p = np.array([weights[c] / counts[c] for c in labels])
        return p / p.sum()


def project_policy(strategy: str, config: SimulationConfig, dataset: Dataset | None = None) -> dict:
    """The routing of each strategy, for the same labeling capacity: the most uncertain
    predictions (margin) with a small audit sample for accuracy estimates, or a random
    sample the size of what annotators label in a round. With grouping on, uncertainty
    routing lets more through (`grouping_threshold`): groups are built from what is routed,
    never from the audit sample."""
    dataset = dataset or Dataset.digits()
    if strategy == "uncertainty":
        threshold = config.grouping_threshold if config.grouping else config.uncertainty_threshold
        routing = {"uncertainty": "margin", "threshold": threshold,
                   "audit_rate": config.audit_share * config.labels_per_round / config.traffic,
                   "daily_budget": 1_000_000}
    else:
        routing = {"uncertainty": "margin", "threshold": 1.0, "audit_rate": config.labels_per_round / config.traffic,
                   "daily_budget": 0}
    retraining = {"min_new_labels": 0, "on_drift": False, "schedule": "none", "primary_metric": "accuracy",
                  "min_improvement": 0.0, "require_significance": False, "feature_scaling": "range"}
    if config.shadow:
        routing["disagreement_rate"] = 1.0
        retraining["live_gate"] = {"enabled": True, "min_labels": config.live_min_labels, "min_improvement": 0.0}
    return {
        "labels": dataset.labels,
        "features": [{"name": f, "type": "numeric", "min": float(low), "max": float(high)}
                     for f, low, high in zip(dataset.features, dataset.low, dataset.high, strict=True)],
        "routing": {**routing, "annotations_per_task": 1, "skip_resolved": config.skip_resolved},
        # Groups are built on demand each round (no beat runs here).
        "labeling": {"gold_rate": 0.0, "group_check_rate": config.group_check_rate,
                     "grouping": {"enabled": False, "min_size": 3, "max_size": 50,
                                  "target_size": config.group_target_size}},
        "feedback": {"min_users": 1, "accept_runner_up": True, "queue_corrections": False},
        # A small evaluation set cannot tell small gains from noise: a candidate that is at
        # least as good as the champion replaces it, so the model keeps up with new labels.
        # Pixels have a known range, 0 to 16, and are scaled by it: not standardized (a border
        # pixel that is almost always 0 would turn the shift's noise into large values), nor by
        # the largest value among the labeled rows (which the noisy digits uncertainty routing
        # picks would set).
        "retraining": retraining,
        # Checks judge one simulated hour against the champion's training data.
        "drift": {"fdr": 0.05},
    }


class Simulation:
    """One strategy's run. `ops`, `app` and `annotator` are clients holding the tokens of
    those roles for the project (with grouping on, `annotator` labels groups and `checker`,
    another annotator, the single tasks: a group's checks are never its labeler's own);
    `progress(step, total)` is told how far it got."""

    def __init__(self, *, strategy: str, slug: str, config: SimulationConfig, ops: Client, app: Client,
                 annotator: Client, checker: Client | None = None, dataset: Dataset | None = None,
                 progress: Callable[[str], None] | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy is one of {STRATEGIES}")
        if config.grouping and checker is None:
            raise ValueError("grouping needs a second annotator (checker) for the single tasks and checks")
        self.strategy, self.slug, self.config = strategy, slug, config
        self.ops, self.app, self.annotator, self.checker = ops, app, annotator, checker
        self.progress = progress or (lambda step: None)
        self.digits = Digits(config, dataset)
        self.dataset = self.digits.dataset
        # Annotator time spent and what it bought, and labels against the truth: [right, n].
        self.seconds = 0.0
        self.items = 0
        self.group_items = 0
        self.group_tally = [0, 0]
        self.work = Counter()
        self.returned: set[str] = set()  # prediction ids of members taken out of a group
        self.single_tally = [0, 0]
        # End users and annotators draw from this one; how often depends on the strategy (how
        # many predictions are wrong, how many tasks there are), so traffic and the shifted
        # gold digits draw from streams of their own: the same digits and the same noise for
        # both strategies in every round, whatever happened before.
        self.rng = np.random.default_rng(config.seed + 1)
        self.labels_spent = 0
        self.champion_name = ""
        self.champion: Model | None = None
        # Shadow mode: the candidate in shadow ({"name", "round"}: the round it was trained in), and what
        # became of each one.
        self.challenger: dict | None = None
        self.decisions: list[ShadowDecision] = []
        # Simulated time: round r happens in hour r of the past `rounds + 2` hours, so that
        # each drift check looks at exactly one round of traffic.
        self.start = (datetime.now(UTC) - timedelta(hours=config.rounds + 2)).replace(minute=0, second=0,
                                                                                       microsecond=0)

    # --- Setup --------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Bootstrap: annotators label a small initial slice, ops mark gold answers, and a
        first model is trained on the slice; then the strategy's routing takes over."""
        policy = project_policy(self.strategy, self.config, self.dataset)
        self.ops.update_project(self.slug, routing={"threshold": 0.0, "audit_rate": 0.0, "daily_budget": 1_000_000},
                                labeling=policy["labeling"], feedback=policy["feedback"],
                                retraining=policy["retraining"])
        initial = self.digits.initial
        self._log(initial, self.digits.x[initial], version="seed", hour=0,
                  predicted=np.full(len(initial), self.digits.labels[0]), confidence=np.full(len(initial), 0.1))
        self._annotate(limit=len(initial), count=False)
        self._gold(self.digits.gold[: len(self.digits.gold) // 2], self.digits.x, prefix="gold")
        self._train()
        self.ops.update_project(self.slug, routing=policy["routing"])

    def _gold(self, indices, pixels, *, prefix: str) -> None:
        """Log digits and mark their true labels as gold answers."""
        self._log(indices, pixels[indices] if pixels is self.digits.x else pixels, version="seed", hour=0,
                  predicted=np.full(len(indices), self.digits.labels[0]), confidence=np.full(len(indices), 0.99),
                  prefix=prefix)
        for index in indices:
            self.ops.mark_gold(self.slug, f"{prefix}-{index}", self.digits.y[index])

    # --- One round ----------------------------------------------------------------------------------

    def round(self, number: int) -> RoundResult:
        config = self.config
        shifted = number >= config.shift_at
        noisy = shifted and config.shift == "noise"
        if number == config.shift_at:
            later = self.digits.gold[len(self.digits.gold) // 2:]
            gold_rng = np.random.default_rng([config.seed, 3])
            pixels = self.digits.shifted(later, config.shift_noise, gold_rng) if noisy else self.digits.x
            self._gold(later, pixels, prefix="gold-shifted")
        traffic_rng = np.random.default_rng([config.seed, 2, number])
        mix = (self.digits.mix_probabilities(self.digits.pool, config)
               if shifted and config.shift == "class_mix" else None)
        indices = traffic_rng.choice(self.digits.pool, config.traffic, replace=False, p=mix)
        pixels = self.digits.shifted(indices, config.shift_noise, traffic_rng) if noisy else self.digits.x[indices]
        served = self.champion_name
        labels, confidence, probabilities = self._predict(pixels)
        ids = self._log(indices, pixels, version=served, hour=number, predicted=labels, confidence=confidence,
                        probabilities=probabilities, prefix=f"r{number}")
        if config.shadow:
            self._shadow_score()
        self.progress(f"round {number}: traffic")
        truth = self.digits.y[indices]
        wrong = [i for i in range(len(ids)) if labels[i] != truth[i]]
        corrections = [{"prediction_id": ids[i], "kind": "correct", "label": truth[i], "user": f"user-{i}"}
                       for i in wrong if self.rng.random() < config.feedback_share]
        if corrections:
            self.app.feedback(self.slug, corrections)
        self.progress(f"round {number}: feedback")
        if config.grouping:
            self._label_with_groups()
        else:
            done = self._annotate(limit=config.labels_per_round)
            self.seconds += done * config.annotator_time.single_task_s
        self.progress(f"round {number}: labeling")
        hour = self.start + timedelta(hours=number)
        report = self.ops.drift_check(self.slug, start=hour.isoformat(), end=(hour + timedelta(hours=1)).isoformat())
        self.progress(f"round {number}: drift")
        shadow, promoted = self._shadow_judge(number, shifted) if config.shadow else (None, False)
        if self.challenger is None:
            # In shadow mode a candidate that passes the offline gate goes into shadow, not to champion.
            promoted = self._train() or promoted
            if config.shadow:
                self.challenger = self._shadow_started(number)
        self.progress(f"round {number}: training")
        stats = self.ops.stats(self.slug)
        estimate, label_free = self._estimate(stats, served)
        return RoundResult(
            round=number, labels=self.labels_spent, true_accuracy=self.true_accuracy(shifted),
            estimate=estimate.get("accuracy"), low=estimate.get("low"), high=estimate.get("high"),
            drifted=report["drifted"], drifted_fields=sum(1 for f in report["features"] if f["drifted"]),
            champion=self.champion_name, promoted=promoted, shifted=shifted, label_free=label_free,
            annotator_seconds=self.seconds, items_labeled=self.items, group_items=self.group_items,
            group_label_accuracy=_share(self.group_tally), single_label_accuracy=_share(self.single_tally),
            group_label_estimate=_group_estimate(stats) if config.grouping else None, shadow=shadow,
            group_work=dict(self.work) if config.grouping else None,
        )

    def run(self) -> SimulationResult:
        self.setup()
        result = SimulationResult(strategy=self.strategy, project=self.slug)
        for number in range(1, self.config.rounds + 1):
            result.rounds.append(self.round(number))
        self.finish()
        result.shadow_decisions = list(self.decisions)
        return result

    def finish(self) -> None:
        """After the last round: a challenger still in shadow is recorded as undecided and taken out."""
        if self.challenger is not None:
            name, shifted = self.challenger["name"], self.config.rounds >= self.config.shift_at
            self._shadow_decided(self.ops.shadow(self.slug, name), self.config.rounds, shifted, ended="running")
            self.ops.shadow_stop(self.slug, name, reason="the simulation ended")

    # --- Shadow mode --------------------------------------------------------------------------------

    def _shadow_score(self) -> None:
        """Score the round's traffic with the model in shadow, as the beat's scoring task does
        (the simulation runs no beat): the service's own path, on the same database, which
        stores the shadow's answers and routes the disagreements."""
        for shadow_id in self._active_shadows():
            shadow_score(shadow_id=shadow_id)

    def _active_shadows(self) -> list[int]:
        return list(ShadowModel.objects.filter(project__slug=self.slug, state=ShadowState.ACTIVE)
                    .order_by("id").values_list("id", flat=True))

    def _shadow_started(self, number: int) -> dict | None:
        """The candidate the round's training run put in shadow, if it passed the offline gate."""
        name = (ShadowModel.objects.filter(project__slug=self.slug, state=ShadowState.ACTIVE)
                .values_list("model_version__name", flat=True).first())
        return None if name is None else {"name": name, "round": number}

    def _shadow_judge(self, number: int, shifted: bool) -> tuple[dict | None, bool]:
        """The live gate's look at the challenger, as the beat's task does: a better one is
        promoted, a worse one retired. One still undecided after `shadow_rounds` rounds is
        taken out by ops, so that training resumes. Returns the challenger as the gate saw
        it and whether it was promoted."""
        if self.challenger is None:
            return None, False
        name = self.challenger["name"]
        for shadow_id in self._active_shadows():
            live_gate_evaluate(shadow_id=shadow_id)
        comparison = self.ops.shadow(self.slug, name)
        seen = {"model": name, "verdict": comparison["verdict"], "labeled": comparison["labeled"],
                "paired": comparison["paired"], "difference": comparison["difference"]}
        state = (comparison.get("shadow") or {}).get("state")
        promoted = False
        if state == ShadowState.ACTIVE and number - self.challenger["round"] >= self.config.shadow_rounds:
            self.ops.shadow_stop(self.slug, name, reason=f"undecided after {self.config.shadow_rounds} rounds")
            self._shadow_decided(comparison, number, shifted, ended="held_back")
        elif state != ShadowState.ACTIVE:
            promoted = state == ShadowState.PROMOTED
            self._shadow_decided(comparison, number, shifted, ended="promoted" if promoted else "retired")
            if promoted:
                self._champion_refresh()
        return seen, promoted

    def _shadow_decided(self, comparison: dict, number: int, shifted: bool, *, ended: str) -> None:
        name = self.challenger["name"]
        content, sha256 = self.ops.model_artifact(self.slug, name)
        candidate = load_model(content, sha256=sha256)
        # The champion it was compared with is the one that served: promotion has not yet changed self.champion.
        labeled = comparison["labeled"]
        self.decisions.append(ShadowDecision(
            model=name, champion=self.champion_name, started_round=self.challenger["round"], decided_round=number,
            verdict={"promoted": "better", "retired": "worse"}.get(ended, "undecided"),
            labels=labeled["disagreement"] if self.strategy == "uncertainty" else labeled["audit"],
            labeled=labeled, paired=comparison["paired"], difference=comparison["difference"],
            true_difference=self.true_accuracy(shifted, model=candidate) - self.true_accuracy(shifted),
            ended=ended))
        self.challenger = None

    # --- The parts ----------------------------------------------------------------------------------

    def _log(self, indices, pixels, *, version: str, hour: int, predicted, confidence, probabilities=None,
             prefix: str = "init") -> list[str]:
        created_at = (self.start + timedelta(hours=hour, minutes=30)).isoformat()
        items = []
        for row, index in enumerate(indices):
            item = {
                "id": f"{prefix}-{index}", "model_version": version or "seed", "label": str(predicted[row]),
                "confidence": float(confidence[row]), "created_at": created_at,
                "features": {name: float(value) for name, value in
                             zip(self.dataset.features, pixels[row], strict=True)},
            }
            if self.dataset.images:
                item["input"] = {"image": digit_png(pixels[row])}
            if probabilities is not None:
                item["probabilities"] = probabilities[row]
                item.pop("confidence")
            items.append(item)
        self.app.log_predictions(self.slug, items)
        return [item["id"] for item in items]

    def _annotate(self, *, limit: int, count: bool = True, annotator: Client | None = None) -> int:
        """Annotators take tasks in the service's order and label what they see, now and
        then wrongly, until the queue is empty or their capacity for the round is spent."""
        annotator = annotator or self.annotator
        done = 0
        while done < limit:
            task = annotator.next_task(self.slug)
            if task is None:
                break
            truth = self._truth(task["prediction"]["id"])
            label = truth
            if self.rng.random() < self.config.annotator_error:
                label = str(self.rng.choice([x for x in self.digits.labels if x != truth]))
            try:
                annotator.annotate(task["id"], label, lead_time_s=float(self.rng.uniform(1, 6)))
            except FlywheelError as exc:
                if exc.status != 400:  # an end user ruled that label out: a person knows better
                    raise
                label = truth
                annotator.annotate(task["id"], truth)
            done += 1
            if count:
                self.single_tally[0] += label == truth
                self.single_tally[1] += 1
                # A check labels again what a group labeled: time spent, no new item.
                self.items += task.get("reason") != "group_check"
                kind = ("check" if task.get("reason") == "group_check" else
                        "returned" if task["prediction"]["id"] in self.returned else "single")
                self.work[f"{kind}_seconds"] += self.config.annotator_time.single_task_s
        if count:
            self.labels_spent += done
        return done

    # --- Grouping -----------------------------------------------------------------------------------

    def _label_with_groups(self) -> None:
        """A round's labeling with grouping on, within the same time as without: groups are
        built from the open tasks, one annotator labels groups for `group_share` of the
        time, another the single tasks (checks, members taken out, tasks no group holds)
        with the rest; time single tasks leave unused goes to groups again."""
        config, cost = self.config, self.config.annotator_time
        budget = config.seconds_per_round
        self.ops.build_groups(self.slug)
        spent = self._groups_within(budget * config.group_share)
        singles = self._annotate(limit=int((budget - spent) // cost.single_task_s), annotator=self.checker)
        spent += singles * cost.single_task_s
        spent += self._groups_within(budget - spent)
        self.seconds += spent

    def _groups_within(self, seconds: float) -> float:
        """Claim and label groups while their cost fits in `seconds`; returns the time spent."""
        spent = 0.0
        while True:
            group = self.annotator.next_group(self.slug)
            if group is None:
                return spent
            cost = self.config.annotator_time.group_cost(len(group["members"]))
            if spent + cost > seconds:
                self.annotator.release_group(group["id"])
                return spent
            spent += cost
            self._label_group(group, cost)

    def _label_group(self, group: dict, seconds: float) -> None:
        """The annotator labels the group with what most members are (now and then wrongly,
        as with a single task) and takes out each member that is something else with
        `misfit_spotted`; a misfit missed gets the group's label."""
        config = self.config
        members = group["members"]
        truths = [self._truth(m["prediction"]["id"]) for m in members]
        counts = Counter(truths)
        majority = max(counts, key=lambda label: (counts[label], label == group["suggested_label"]))
        label = majority
        if self.rng.random() < config.annotator_error:
            label = str(self.rng.choice([x for x in self.digits.labels if x != majority]))
        exclude = {m["task_id"] for m, truth in zip(members, truths, strict=True)
                   if truth != majority and self.rng.random() < config.annotator_time.misfit_spotted}
        for _ in range(2):
            if len(exclude) == len(members):
                self.annotator.release_group(group["id"])
                return
            try:
                self.annotator.annotate_group(group["id"], label, exclude=sorted(exclude), lead_time_s=seconds)
                break
            except FlywheelError as exc:
                # An end user ruled the label out for some members: a person looking at them
                # sees they do not belong, and takes them out.
                ruled_out = _member_ids(exc.fields.get("label", [])) if exc.status == 400 else []
                if not ruled_out:
                    raise
                exclude |= set(ruled_out)
        else:
            self.annotator.release_group(group["id"])
            return
        labeled = [truth for m, truth in zip(members, truths, strict=True) if m["task_id"] not in exclude]
        self.returned |= {m["prediction"]["id"] for m in members if m["task_id"] in exclude}
        misfits = sum(truth != majority for truth in truths)
        self.work.update(groups=1, group_members=len(members), group_seconds=seconds, misfits=misfits,
                         misfits_missed=sum(truth != majority for truth in labeled),
                         slipped_groups=int(label != majority), slipped_members=len(labeled) * (label != majority),
                         suggestion_wrong=int(group["suggested_label"] != majority))
        self.group_tally[0] += sum(truth == label for truth in labeled)
        self.group_tally[1] += len(labeled)
        self.items += len(labeled)
        self.group_items += len(labeled)

    def _truth(self, external_id: str) -> str:
        return self.digits.y[int(external_id.rsplit("-", 1)[1])]

    def _train(self) -> bool:
        run = self.ops.train(self.slug)
        run = self.ops.wait_for_training_run(self.slug, run["id"])
        if run["status"] != "succeeded":
            raise RuntimeError(f"training run {run['number']} failed: {run['error']}")
        self._champion_refresh()
        return bool(run["promoted"])

    def _champion_refresh(self) -> None:
        champion = self.ops.champion(self.slug)
        if champion is not None and champion["name"] != self.champion_name:
            content, sha256 = self.ops.model_artifact(self.slug, champion["name"])
            self.champion, self.champion_name = load_model(content, sha256=sha256), champion["name"]

    def _predict(self, pixels: np.ndarray):
        labels, confidence = self.champion.predict(pixels, np.empty((len(pixels), 0), dtype=object))
        probabilities = self.champion.predict_proba(pixels, np.empty((len(pixels), 0), dtype=object))
        top = []
        for row in probabilities:
            kept = {c: float(p) for c, p in zip(self.champion.classes, row, strict=True) if p >= 1e-4}
            total = sum(kept.values())
            top.append({c: p / total for c, p in kept.items()})
        confidence = [top[i].get(labels[i], 0.0) for i in range(len(labels))]
        return np.array(labels), np.array(confidence), top

    def true_accuracy(self, shifted: bool, *, model: Model | None = None) -> float:
        """The champion's (or `model`'s) accuracy on the held-out digits as traffic looks
        now: with the noise shift's noise, or weighted by the class-mix shift's shares."""
        config, test = self.config, self.digits.test
        model = model or self.champion
        rng = np.random.default_rng(config.seed + 99)
        noisy = shifted and config.shift == "noise"
        pixels = self.digits.shifted(test, config.shift_noise, rng) if noisy else self.digits.x[test]
        labels, _ = model.predict(pixels, np.empty((len(test), 0), dtype=object))
        right = np.array(labels) == self.digits.y[test]
        if shifted and config.shift == "class_mix":
            return float(np.sum(right * self.digits.mix_probabilities(test, config)))
        return float(np.mean(right))

    def _estimate(self, stats: dict, version: str) -> tuple[dict, dict | None]:
        for entry in stats["accuracy"]:
            if entry["model_version"] == version:
                return entry["accuracy"], entry.get("estimated_accuracy")
        return {}, None


def _share(tally: list[int]) -> float | None:
    return tally[0] / tally[1] if tally[1] else None


def _group_estimate(stats: dict) -> dict | None:
    """Group-label accuracy as the service estimated it from the checks."""
    entry = (stats.get("group_labels") or {}).get("accuracy") or {}
    if not entry.get("n"):
        return None
    return {key: entry[key] for key in ("accuracy", "low", "high", "n")}


def _member_ids(messages: list[str]) -> list[int]:
    """The member task ids a refused group label names ("Ruled out for members [3, 7].")."""
    return [int(n) for message in messages for n in re.findall(r"\d+", message.partition("[")[2])]


def labels_to_reach(result: SimulationResult, accuracy: float) -> int | None:
    """The labels spent when the strategy first reached `accuracy` on the traffic as it
    looks at the end (rounds before a shift measured a different distribution), or None."""
    final = result.rounds[-1].shifted
    return next((r.labels for r in result.rounds if r.shifted == final and r.true_accuracy >= accuracy), None)


def compare(uncertainty: SimulationResult, random: SimulationResult) -> dict:
    """How many labels uncertainty routing needed to reach random routing's final accuracy."""
    target = random.rounds[-1].true_accuracy
    spent = random.rounds[-1].labels
    reached = labels_to_reach(uncertainty, target)
    return {"random_final_accuracy": target, "random_labels": spent, "uncertainty_labels_to_reach": reached,
            "uncertainty_final_accuracy": uncertainty.rounds[-1].true_accuracy,
            "share": None if reached is None or not spent else reached / spent}


# Shadow mode: uncertainty routing's run labels the disagreements; random routing's, whose
# budget of 0 routes none, judges on its audit sample alone, with the same labeling capacity.
SHADOW_ARMS = {"uncertainty": "disagreement", "random": "audit"}


def shadow_figures(decisions: list[ShadowDecision]) -> dict:
    """What the live gate decided about the candidates (of one run, or pooled over seeds):
    labels and rounds of traffic to a verdict, and its wrong decisions against the truth: a
    truly worse candidate (below the champion on the held-out digits) promoted, or one truly
    better by at least 2 points retired or held back undecided. A candidate still in shadow
    when the run ended had no verdict and is counted apart (`undecided_at_end`; those truly
    better by 2 points that had seen traffic, `better_undecided_at_end`)."""
    decided = [d for d in decisions if d.verdict != "undecided"]
    worse = [d for d in decisions if d.true_difference < 0]
    better = [d for d in decisions if d.true_difference >= 0.02]
    labels = [d.labels for d in decided]
    return {
        "challengers": len(decisions), "verdicts": len(decided),
        "promoted": sum(d.ended == "promoted" for d in decisions),
        "retired": sum(d.ended == "retired" for d in decisions),
        "held_back": sum(d.ended == "held_back" for d in decisions),
        "undecided_at_end": sum(d.ended == "running" for d in decisions),
        "mean_labels_to_verdict": float(np.mean(labels)) if labels else None,
        "median_labels_to_verdict": float(np.median(labels)) if labels else None,
        "mean_rounds_to_verdict": float(np.mean([d.decided_round - d.started_round for d in decided]))
        if decided else None,
        "truly_worse": len(worse), "worse_promoted": sum(d.verdict == "better" for d in worse),
        "truly_better_by_2_points": len(better),
        "better_held_back": sum(d.ended in ("retired", "held_back") for d in better),
        # Not held back by a decision, but not serving either: the gate was still waiting for labels.
        "better_undecided_at_end": sum(d.ended == "running" and d.paired > 0 for d in better),
    }


def compare_shadow(results: list[SimulationResult]) -> dict:
    """The live gate with disagreement routing against the audit sample alone: each
    strategy's run's figures, by arm."""
    return {SHADOW_ARMS[r.strategy]: shadow_figures(r.shadow_decisions) for r in results}


def mean_result(results: list[SimulationResult]) -> SimulationResult:
    """One strategy's runs from several seeds as one: labels and true accuracy averaged
    round by round (a single seed's curve moves by a few points with the test digits it
    happens to hold)."""
    rounds = []
    for number, rows in enumerate(zip(*(r.rounds for r in results), strict=True), start=1):
        rounds.append(RoundResult(
            round=number, labels=round(float(np.mean([r.labels for r in rows]))),
            true_accuracy=float(np.mean([r.true_accuracy for r in rows])), estimate=None, low=None, high=None,
            drifted=None, drifted_fields=0, champion="", promoted=False, shifted=rows[0].shifted,
            annotator_seconds=float(np.mean([r.annotator_seconds for r in rows])),
            items_labeled=round(float(np.mean([r.items_labeled for r in rows]))),
            group_items=round(float(np.mean([r.group_items for r in rows]))),
            group_label_accuracy=_mean([r.group_label_accuracy for r in rows]),
            single_label_accuracy=_mean([r.single_label_accuracy for r in rows]),
        ))
    return SimulationResult(strategy=results[0].strategy, project=f"mean of {len(results)} seeds", rounds=rounds,
                            grouping=results[0].grouping)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def items_per_minute(result: SimulationResult) -> float | None:
    last = result.rounds[-1]
    return last.items_labeled / (last.annotator_seconds / 60) if last.annotator_seconds else None


def compare_grouping(off: SimulationResult, on: SimulationResult) -> dict:
    """What grouping bought for the same annotator time: items labeled per annotator-minute,
    group labels' accuracy against the truth beside single tasks', how often the interval
    the service drew from the checks held the true group-label accuracy, and the model
    accuracy reached."""
    off_rate, on_rate = items_per_minute(off), items_per_minute(on)
    estimated = [r for r in on.rounds if r.group_label_estimate is not None and r.group_label_accuracy is not None]
    held = [r for r in estimated
            if r.group_label_estimate["low"] <= r.group_label_accuracy <= r.group_label_estimate["high"]]
    last_on, last_off = on.rounds[-1], off.rounds[-1]
    single = last_off.single_label_accuracy
    group = last_on.group_label_accuracy
    estimate = last_on.group_label_estimate
    return {
        "annotator_minutes_off": last_off.annotator_seconds / 60,
        "annotator_minutes_on": last_on.annotator_seconds / 60,
        "items_labeled_off": last_off.items_labeled, "items_labeled_on": last_on.items_labeled,
        "group_items": last_on.group_items,
        "items_per_minute_off": off_rate, "items_per_minute_on": on_rate,
        "speedup": on_rate / off_rate if off_rate and on_rate is not None else None,
        "single_label_accuracy": single, "group_label_accuracy": group,
        "group_label_accuracy_gap": None if single is None or group is None else single - group,
        "group_label_estimate": estimate,
        "rounds_with_estimate": len(estimated), "rounds_interval_held": len(held),
        "interval_coverage": len(held) / len(estimated) if estimated else None,
        "final_accuracy_off": last_off.true_accuracy, "final_accuracy_on": last_on.true_accuracy,
    }


def plot_grouping(off: SimulationResult, on: SimulationResult, path: str, *,
                  title: str = "Grouping on the handwritten digits") -> None:
    """For the same annotator time, grouping on against off: the champion's accuracy, and
    the items labeled, against annotator-minutes spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (accuracy, items) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for number, result in enumerate((off, on)):
        minutes = [r.annotator_seconds / 60 for r in result.rounds]
        label = "grouping on" if result.grouping else "grouping off (single tasks)"
        accuracy.plot(minutes, [r.true_accuracy for r in result.rounds], marker="o", color=f"C{number}", label=label)
        items.plot(minutes, [r.items_labeled for r in result.rounds], marker="o", color=f"C{number}", label=label)
    accuracy.set_xlabel("annotator-minutes spent")
    accuracy.set_ylabel("accuracy of the champion")
    items.set_xlabel("annotator-minutes spent")
    items.set_ylabel("items labeled")
    for axes in (accuracy, items):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot(results: list[SimulationResult], path: str, *, title: str = "The flywheel on handwritten digits",
         shift: str = "noise") -> None:
    """Accuracy against labels spent, one line per strategy, with the production accuracy
    the service estimated from audit labels (and its 95% interval), the shift marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    for number, result in enumerate(results):
        color = f"C{number}"
        labels = [r.labels for r in result.rounds]
        axes.plot(labels, [r.true_accuracy for r in result.rounds], marker="o", color=color,
                  label=f"{result.name}: true accuracy")
        estimates = [(r.labels, r.estimate, r.low, r.high) for r in result.rounds if r.estimate is not None]
        if estimates:
            xs, est, lows, highs = zip(*estimates, strict=True)
            # Offset a little so the two strategies' intervals do not hide each other.
            xs = np.add(xs, 2.5 if number else -2.5)
            axes.errorbar(xs, est, yerr=[np.subtract(est, lows), np.subtract(highs, est)], fmt="x", color=color,
                          alpha=0.4, capsize=2, label=f"{result.name}: estimated from audit labels")
        shift_at = next((r.labels for r in result.rounds if r.shifted), None)
        if shift_at is not None and number == 0:
            axes.axvline(shift_at, color="grey", linestyle="--", linewidth=1)
            axes.annotate(f"{shift.replace('_', '-')} shift", (shift_at, 0.02), xycoords=("data", "axes fraction"),
                          xytext=(4, 0), textcoords="offset points", color="grey", fontsize=8)
    axes.set_xlabel("labels spent (annotations)")
    axes.set_ylabel("accuracy of the champion")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
