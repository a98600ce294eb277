"""flywheel_simulate_shadow: the fast check of the live gate's estimator on controlled
challengers (half truly worse): its interval's coverage, and labels to a verdict with
disagreement routing against the audit sample alone. `flywheel_simulate --shadow` runs the
service's shadow paths on the flywheel's own candidates."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from sim import shadow


class Command(BaseCommand):
    help = ("The fast check of the live gate: judge challengers (truly better or truly worse) on simulated live "
            "traffic, spending labels on disagreements or on a random audit sample; print labels to a verdict, wrong "
            "decisions and how often the estimate's interval holds the true difference.")

    def add_arguments(self, parser):
        defaults = shadow.ShadowConfig()
        parser.add_argument("--seeds", type=int, default=defaults.seeds, help="challengers judged (half better)")
        parser.add_argument("--seed", type=int, default=0, help="the first seed")
        parser.add_argument("--labels-per-stretch", type=int, default=defaults.labels_per_stretch,
                            help=f"labels per {defaults.stretch} predictions")
        parser.add_argument("--min-labels", type=int, default=defaults.min_labels,
                            help="labels the live gate needs before it decides")
        parser.add_argument("--output", default="var/shadow.json", help="where the figures go (JSON)")

    def handle(self, *args, **options):
        config = shadow.ShadowConfig(seeds=options["seeds"], labels_per_stretch=options["labels_per_stretch"],
                                     min_labels=options["min_labels"])
        result = shadow.simulate(config, first_seed=options["seed"])
        for seed in result.seeds:
            self.stdout.write(f"seed {seed.seed:3d}: truly {seed.truly:6s} ({seed.true_difference:+.3f})  "
                              + "  ".join(f"{s}: {seed.verdicts[s]} after {seed.labels[s]} labels"
                                          for s in shadow.STRATEGIES))
        for strategy, figures in result.summary().items():
            mean = figures["mean_labels_to_verdict"]
            self.stdout.write(
                f"{strategy:12s} verdicts {figures['decided']}/{len(result.seeds)}, "
                f"mean labels to a verdict {mean if mean is None else round(mean, 1)}, "
                f"worse promoted {figures['worse_promoted']}/{figures['truly_worse']}, "
                f"better by 2+ points held back {figures['better_held_back']}/{figures['truly_better_by_2_points']}, "
                f"interval held the true difference {figures['interval_held']}/{len(result.seeds)}")
        path = Path(options["output"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.as_dict(), indent=1))
        self.stdout.write(f"figures: {path}")
