"""The live gate on live traffic, simulated: a champion and a challenger, both trained on
handwritten digits, answer the same stream of held-out digits; people label what routing
sends them within a fixed capacity; the live gate (flywheel.training.live, the service's
own estimator and verdict) decides after every stretch of traffic.

Two ways of spending the same labels are compared: **disagreement** routing labels the
predictions the two models disagree on (drawn at random among them, as the service's
disagreement_rate and task order do), **audit** labels a random sample of all traffic.
Each seed draws a challenger that is truly better (trained on more digits) or truly worse
(trained on the same digits with a share of wrong labels); the true difference is measured
on every held-out digit. The figures: labels spent until a verdict, how often a truly worse
challenger is promoted, how often one truly better by at least 2 points is held back, and
how often the estimate's 95% interval, taken after a fixed amount of traffic (not at the
verdict, where stopping early would bias it), holds the true difference.

This is the fast check, in seconds, on controlled challengers (half of them truly worse,
which the flywheel's own candidates seldom are); `flywheel_simulate --shadow` runs the
service's own shadow paths on the candidates the flywheel trains, in minutes a seed."""

from dataclasses import asdict, dataclass, field

import numpy as np

from flywheel.training.live import LiveGatePolicy, accuracy_difference, live_verdict
from flywheel.training.trainers import SklearnTrainer, TrainingData

STRATEGIES = ("disagreement", "audit")


@dataclass(frozen=True)
class ShadowConfig:
    seeds: int = 20
    champion_rows: int = 200  # what the champion was trained on
    better_rows: int = 450  # a truly better challenger: more digits
    worse_noise: float = 0.15  # a truly worse one: the champion's digits, this share mislabeled
    stretch: int = 200  # predictions between two looks of the live gate
    labels_per_stretch: int = 10  # what annotators label per stretch
    max_stretches: int = 60  # traffic after which an undecided challenger is held back
    min_labels: int = 30
    min_improvement: float = 0.0
    held_out: int = 700  # digits the traffic is drawn from (with replacement), never trained on
    coverage_stretches: int = 10  # traffic after which the interval is checked against the truth


@dataclass
class SeedResult:
    seed: int
    truly: str  # better or worse
    true_difference: float
    verdicts: dict = field(default_factory=dict)  # strategy: better, worse or undecided
    labels: dict = field(default_factory=dict)  # strategy: labels spent until the verdict
    covered: dict = field(default_factory=dict)  # strategy: the interval after coverage_stretches held the truth


@dataclass
class ShadowResult:
    config: ShadowConfig
    seeds: list[SeedResult]

    def summary(self) -> dict:
        out = {}
        for strategy in STRATEGIES:
            decided = [s.labels[strategy] for s in self.seeds if s.verdicts[strategy] != "undecided"]
            out[strategy] = {
                "decided": len(decided),
                "mean_labels_to_verdict": float(np.mean(decided)) if decided else None,
                "worse_promoted": sum(1 for s in self.seeds if s.truly == "worse" and s.verdicts[strategy] == "better"),
                "better_held_back": sum(1 for s in self.seeds if s.truly == "better" and s.true_difference >= 0.02
                                        and s.verdicts[strategy] != "better"),
                "truly_better_by_2_points": sum(1 for s in self.seeds if s.truly == "better"
                                                and s.true_difference >= 0.02),
                "truly_worse": sum(1 for s in self.seeds if s.truly == "worse"),
                "interval_held": sum(1 for s in self.seeds if s.covered[strategy]),
            }
        return out

    def as_dict(self) -> dict:
        return {"config": asdict(self.config), "summary": self.summary(), "seeds": [asdict(s) for s in self.seeds]}


def _train(x, y, seed: int):
    data = TrainingData(numeric=x, categorical=np.empty((len(y), 0), dtype=object), labels=y.astype(object),
                        weights=np.ones(len(y)))
    return SklearnTrainer().train(data, seed=seed)[0]


def _models(config: ShadowConfig, seed: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    x, y = digits.data, digits.target.astype(str)
    held_out, training = order[:config.held_out], order[config.held_out:]
    champion = _train(x[training[:config.champion_rows]], y[training[:config.champion_rows]], seed)
    truly = "better" if seed % 2 == 0 else "worse"
    if truly == "better":
        rows = training[:config.better_rows]
        labels = y[rows]
    else:
        rows = training[:config.champion_rows]
        labels = y[rows].copy()
        flip = rng.random(len(rows)) < config.worse_noise
        labels[flip] = [str((int(v) + 1 + rng.integers(9)) % 10) for v in labels[flip]]
    challenger = _train(x[rows], labels, seed)
    none = np.empty((len(held_out), 0), dtype=object)
    said_champion = np.array(champion.predict(x[held_out], none)[0])
    said_challenger = np.array(challenger.predict(x[held_out], none)[0])
    return truly, y[held_out], said_champion, said_challenger


def run_seed(config: ShadowConfig, seed: int) -> SeedResult:
    truly, truth, champion, challenger = _models(config, seed)
    true_difference = float(np.mean(challenger == truth) - np.mean(champion == truth))
    result = SeedResult(seed=seed, truly=truly, true_difference=true_difference)
    policy = LiveGatePolicy(enabled=True, min_labels=config.min_labels, min_improvement=config.min_improvement)
    for strategy in STRATEGIES:
        # The same traffic for both strategies: a stream of held-out digits.
        traffic_rng = np.random.default_rng([seed, 1])
        label_rng = np.random.default_rng([seed, 2, STRATEGIES.index(strategy)])
        paired, outcomes, eligible, labeled = 0, [], 0, 0
        verdict, decided_after = "undecided", None
        for stretch in range(1, max(config.max_stretches, config.coverage_stretches) + 1):
            stream = traffic_rng.integers(len(truth), size=config.stretch)
            paired += config.stretch
            d = (challenger[stream] == truth[stream]).astype(int) - (champion[stream] == truth[stream]).astype(int)
            candidates = np.flatnonzero(champion[stream] != challenger[stream]) if strategy == "disagreement" \
                else np.arange(config.stretch)
            eligible += len(candidates)
            chosen = label_rng.permutation(candidates)[:config.labels_per_stretch]
            labeled += len(chosen)
            outcomes += [int(v) for v in d[chosen]]
            # Each eligible prediction was labeled with the same probability: the share labeled.
            share = labeled / eligible if eligible else 0.0
            difference = accuracy_difference(paired=paired, labeled=[(v, share) for v in outcomes])
            if stretch == config.coverage_stretches:
                result.covered[strategy] = difference.value is not None and (
                    difference.low <= true_difference <= difference.high)
            if decided_after is None and stretch <= config.max_stretches:
                verdict = live_verdict(difference=difference, slices=[], policy=policy, slice_tolerance=1.0).verdict
                if verdict != "undecided":
                    decided_after = labeled
            if decided_after is not None and stretch >= config.coverage_stretches:
                break
        result.verdicts[strategy], result.labels[strategy] = verdict, decided_after or labeled
    return result


def simulate(config: ShadowConfig | None = None, *, first_seed: int = 0) -> ShadowResult:
    config = config or ShadowConfig()
    return ShadowResult(config=config, seeds=[run_seed(config, seed) for seed in range(first_seed,
                                                                                        first_seed + config.seeds)])
