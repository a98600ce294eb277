"""The flywheel running by itself on real data, against the service, through the client:
an app serving the champion on held-out handwritten digits (with a shift injected midway),
end users who correct some of its mistakes, annotators who label the queue (and sometimes
err), drift checks, and retraining through the gate, round after round.

Run twice from the same seed, once routing by uncertainty and once at random with the same
labeling capacity, it answers what the flywheel is for: how many fewer labels uncertainty
routing needs to reach the accuracy random routing reaches."""

import base64
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from flywheel.training.trainers import Model, load_model
from flywheel_client import Client, FlywheelError

FEATURES = [f"px{i}" for i in range(64)]
LABELS = [str(i) for i in range(10)]
STRATEGIES = ("uncertainty", "random")
SHIFTS = ("noise", "class_mix")


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

    def __post_init__(self):
        if self.shift not in SHIFTS:
            raise ValueError(f"shift is one of {SHIFTS}")

    @property
    def shift_at(self) -> int:
        return self.shift_round if self.shift_round is not None else max(2, self.rounds // 2)


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


@dataclass
class SimulationResult:
    strategy: str
    project: str
    rounds: list[RoundResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "project": self.project, "rounds": [asdict(r) for r in self.rounds]}


def digit_png(pixels: np.ndarray) -> str:
    """An 8x8 digit (values 0-16) as a base64 PNG, dark ink on white."""
    from PIL import Image

    grey = (255 - np.clip(pixels, 0, 16) * 255 / 16).astype(np.uint8).reshape(8, 8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Digits:
    """scikit-learn's bundled digits, shuffled once by the seed and split: held-out test
    digits, gold digits, the initial slice, and the pool traffic is drawn from."""

    def __init__(self, config: SimulationConfig):
        from sklearn.datasets import load_digits

        digits = load_digits()
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(len(digits.target))
        self.x, self.y = digits.data, digits.target.astype(str)
        cut = np.cumsum([config.test, config.gold, config.initial_labels])
        self.test, self.gold, self.initial, self.pool = np.split(order, cut)
        if len(self.pool) < config.traffic:
            raise ValueError("Not enough digits left for a round of traffic; lower test, gold or traffic.")

    def shifted(self, indices: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
        return np.clip(self.x[indices] + rng.normal(0, noise, (len(indices), 64)), 0, 16).round(2)

    def class_weights(self, config: SimulationConfig) -> dict[str, float]:
        """Each digit's share of the traffic after a class-mix shift."""
        taking_over = set(config.shift_classes)
        rest = [c for c in LABELS if c not in taking_over]
        return {c: config.shift_class_share / len(taking_over) if c in taking_over
                else (1 - config.shift_class_share) / len(rest) for c in LABELS}

    def mix_probabilities(self, indices: np.ndarray, config: SimulationConfig) -> np.ndarray:
        """Sampling probabilities over `indices` that give the class-mix shift's shares."""
        weights = self.class_weights(config)
        labels = self.y[indices]
        counts = {c: int(np.sum(labels == c)) for c in LABELS}
        p = np.array([weights[c] / counts[c] for c in labels])
        return p / p.sum()


def project_policy(strategy: str, config: SimulationConfig) -> dict:
    """The routing of each strategy, for the same labeling capacity: the most uncertain
    predictions (margin) with a small audit sample for accuracy estimates, or a random
    sample the size of what annotators label in a round."""
    if strategy == "uncertainty":
        routing = {"uncertainty": "margin", "threshold": config.uncertainty_threshold,
                   "audit_rate": config.audit_share * config.labels_per_round / config.traffic,
                   "daily_budget": 1_000_000}
    else:
        routing = {"uncertainty": "margin", "threshold": 1.0, "audit_rate": config.labels_per_round / config.traffic,
                   "daily_budget": 0}
    return {
        "labels": LABELS, "features": [{"name": f, "type": "numeric", "min": 0.0, "max": 16.0} for f in FEATURES],
        "routing": {**routing, "annotations_per_task": 1, "skip_resolved": config.skip_resolved},
        "labeling": {"gold_rate": 0.0},
        "feedback": {"min_users": 1, "accept_runner_up": True, "queue_corrections": False},
        # A small evaluation set cannot tell small gains from noise: a candidate that is at
        # least as good as the champion replaces it, so the model keeps up with new labels.
        # Pixels have a known range, 0 to 16, and are scaled by it: not standardized (a border
        # pixel that is almost always 0 would turn the shift's noise into large values), nor by
        # the largest value among the labeled rows (which the noisy digits uncertainty routing
        # picks would set).
        "retraining": {"min_new_labels": 0, "on_drift": False, "schedule": "none", "primary_metric": "accuracy",
                       "min_improvement": 0.0, "require_significance": False, "feature_scaling": "range"},
        # Checks judge one simulated hour against the champion's training data.
        "drift": {"fdr": 0.05},
    }


class Simulation:
    """One strategy's run. `ops`, `app` and `annotator` are clients holding the tokens of
    those roles for the project; `progress(step, total)` is told how far it got."""

    def __init__(self, *, strategy: str, slug: str, config: SimulationConfig, ops: Client, app: Client,
                 annotator: Client, progress: Callable[[str], None] | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy is one of {STRATEGIES}")
        self.strategy, self.slug, self.config = strategy, slug, config
        self.ops, self.app, self.annotator = ops, app, annotator
        self.progress = progress or (lambda step: None)
        self.digits = Digits(config)
        # End users and annotators draw from this one; how often depends on the strategy (how
        # many predictions are wrong, how many tasks there are), so traffic and the shifted
        # gold digits draw from streams of their own: the same digits and the same noise for
        # both strategies in every round, whatever happened before.
        self.rng = np.random.default_rng(config.seed + 1)
        self.labels_spent = 0
        self.champion_name = ""
        self.champion: Model | None = None
        # Simulated time: round r happens in hour r of the past `rounds + 2` hours, so that
        # each drift check looks at exactly one round of traffic.
        self.start = (datetime.now(UTC) - timedelta(hours=config.rounds + 2)).replace(minute=0, second=0,
                                                                                       microsecond=0)

    # --- Setup --------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Bootstrap: annotators label a small initial slice, ops mark gold answers, and a
        first model is trained on the slice; then the strategy's routing takes over."""
        policy = project_policy(self.strategy, self.config)
        self.ops.update_project(self.slug, routing={"threshold": 0.0, "audit_rate": 0.0, "daily_budget": 1_000_000},
                                labeling=policy["labeling"], feedback=policy["feedback"],
                                retraining=policy["retraining"])
        initial = self.digits.initial
        self._log(initial, self.digits.x[initial], version="seed", hour=0,
                  predicted=np.full(len(initial), "0"), confidence=np.full(len(initial), 0.1))
        self._annotate(limit=len(initial), count=False)
        self._gold(self.digits.gold[: len(self.digits.gold) // 2], self.digits.x, prefix="gold")
        self._train()
        self.ops.update_project(self.slug, routing=policy["routing"])

    def _gold(self, indices, pixels, *, prefix: str) -> None:
        """Log digits and mark their true labels as gold answers."""
        self._log(indices, pixels[indices] if pixels is self.digits.x else pixels, version="seed", hour=0,
                  predicted=np.full(len(indices), "0"), confidence=np.full(len(indices), 0.99), prefix=prefix)
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
        self.progress(f"round {number}: traffic")
        truth = self.digits.y[indices]
        wrong = [i for i in range(len(ids)) if labels[i] != truth[i]]
        corrections = [{"prediction_id": ids[i], "kind": "correct", "label": truth[i], "user": f"user-{i}"}
                       for i in wrong if self.rng.random() < config.feedback_share]
        if corrections:
            self.app.feedback(self.slug, corrections)
        self.progress(f"round {number}: feedback")
        self._annotate(limit=config.labels_per_round)
        self.progress(f"round {number}: labeling")
        hour = self.start + timedelta(hours=number)
        report = self.ops.drift_check(self.slug, start=hour.isoformat(), end=(hour + timedelta(hours=1)).isoformat())
        self.progress(f"round {number}: drift")
        promoted = self._train()
        self.progress(f"round {number}: training")
        estimate, label_free = self._estimate(served)
        return RoundResult(
            round=number, labels=self.labels_spent, true_accuracy=self.true_accuracy(shifted),
            estimate=estimate.get("accuracy"), low=estimate.get("low"), high=estimate.get("high"),
            drifted=report["drifted"], drifted_fields=sum(1 for f in report["features"] if f["drifted"]),
            champion=self.champion_name, promoted=promoted, shifted=shifted, label_free=label_free,
        )

    def run(self) -> SimulationResult:
        self.setup()
        result = SimulationResult(strategy=self.strategy, project=self.slug)
        for number in range(1, self.config.rounds + 1):
            result.rounds.append(self.round(number))
        return result

    # --- The parts ----------------------------------------------------------------------------------

    def _log(self, indices, pixels, *, version: str, hour: int, predicted, confidence, probabilities=None,
             prefix: str = "init") -> list[str]:
        created_at = (self.start + timedelta(hours=hour, minutes=30)).isoformat()
        items = []
        for row, index in enumerate(indices):
            item = {
                "id": f"{prefix}-{index}", "model_version": version or "seed", "label": str(predicted[row]),
                "confidence": float(confidence[row]), "created_at": created_at,
                "features": {name: float(value) for name, value in zip(FEATURES, pixels[row], strict=True)},
                "input": {"image": digit_png(pixels[row])},
            }
            if probabilities is not None:
                item["probabilities"] = probabilities[row]
                item.pop("confidence")
            items.append(item)
        self.app.log_predictions(self.slug, items)
        return [item["id"] for item in items]

    def _annotate(self, *, limit: int, count: bool = True) -> int:
        """Annotators take tasks in the service's order and label what they see, now and
        then wrongly, until the queue is empty or their capacity for the round is spent."""
        done = 0
        while done < limit:
            task = self.annotator.next_task(self.slug)
            if task is None:
                break
            truth = self._truth(task["prediction"]["id"])
            label = truth
            if self.rng.random() < self.config.annotator_error:
                label = str(self.rng.choice([x for x in LABELS if x != truth]))
            try:
                self.annotator.annotate(task["id"], label, lead_time_s=float(self.rng.uniform(1, 6)))
            except FlywheelError as exc:
                if exc.status != 400:  # an end user ruled that label out: a person knows better
                    raise
                self.annotator.annotate(task["id"], truth)
            done += 1
        if count:
            self.labels_spent += done
        return done

    def _truth(self, external_id: str) -> str:
        return self.digits.y[int(external_id.rsplit("-", 1)[1])]

    def _train(self) -> bool:
        run = self.ops.train(self.slug)
        run = self.ops.wait_for_training_run(self.slug, run["id"])
        if run["status"] != "succeeded":
            raise RuntimeError(f"training run {run['number']} failed: {run['error']}")
        champion = self.ops.champion(self.slug)
        if champion is not None and champion["name"] != self.champion_name:
            content, sha256 = self.ops.model_artifact(self.slug, champion["name"])
            self.champion, self.champion_name = load_model(content, sha256=sha256), champion["name"]
        return bool(run["promoted"])

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

    def true_accuracy(self, shifted: bool) -> float:
        """The champion's accuracy on the held-out digits as traffic looks now: with the
        noise shift's noise, or weighted by the class-mix shift's shares."""
        config, test = self.config, self.digits.test
        rng = np.random.default_rng(config.seed + 99)
        noisy = shifted and config.shift == "noise"
        pixels = self.digits.shifted(test, config.shift_noise, rng) if noisy else self.digits.x[test]
        labels, _ = self.champion.predict(pixels, np.empty((len(test), 0), dtype=object))
        right = np.array(labels) == self.digits.y[test]
        if shifted and config.shift == "class_mix":
            return float(np.sum(right * self.digits.mix_probabilities(test, config)))
        return float(np.mean(right))

    def _estimate(self, version: str) -> tuple[dict, dict | None]:
        for entry in self.ops.stats(self.slug)["accuracy"]:
            if entry["model_version"] == version:
                return entry["accuracy"], entry.get("estimated_accuracy")
        return {}, None


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
        ))
    return SimulationResult(strategy=results[0].strategy, project=f"mean of {len(results)} seeds", rounds=rounds)


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
                  label=f"{result.strategy} routing: true accuracy")
        estimates = [(r.labels, r.estimate, r.low, r.high) for r in result.rounds if r.estimate is not None]
        if estimates:
            xs, est, lows, highs = zip(*estimates, strict=True)
            # Offset a little so the two strategies' intervals do not hide each other.
            xs = np.add(xs, 2.5 if number else -2.5)
            axes.errorbar(xs, est, yerr=[np.subtract(est, lows), np.subtract(highs, est)], fmt="x", color=color,
                          alpha=0.4, capsize=2, label=f"{result.strategy} routing: estimated from audit labels")
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
