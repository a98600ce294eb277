"""flywheel_simulate: run the flywheel by itself on handwritten digits, through the client."""

import argparse
import contextlib
import json
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

from accounts.models import Role
from accounts.services import account_upsert, token_issue
from common.logging import logs_to_file
from flywheel.models import Project
from flywheel_client import Client
from sim import simulation


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """The service itself, on a loopback port in this process (when no --url is given)."""

    def __init__(self):
        import uvicorn

        from config.asgi import application

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise CommandError("The service did not start.")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def simulation_clients(url: str, slug: str, *, seed: int | None = None) -> tuple[Client, Client, Client]:
    """Ops, app and annotator clients for a new simulation project. Earlier simulations'
    projects of the same strategy are deleted (their stored datasets stay under their own
    slugs: dataset manifests are never overwritten). With a `seed`, the project's audit
    salt comes from it: the audit sample, which is all random routing labels, is then the
    same in every run of that seed instead of a new draw each time."""
    ops_token = _key("sim-ops", Role.OPS)
    for old in Project.objects.filter(slug__startswith=slug.rsplit("-", 2)[0] + "-"):
        old.delete()
    ops = Client(url, ops_token)
    policy = simulation.project_policy("uncertainty", simulation.SimulationConfig())
    ops.create_project(slug=slug, name=f"Simulation: {slug}", labels=policy["labels"], features=policy["features"])
    if seed is not None:
        Project.objects.filter(slug=slug).update(audit_salt=f"simulation-seed-{seed}")
    project = Project.objects.get(slug=slug)
    app_token = _key("sim-app", Role.APP, project)
    annotator_token = _key("sim-annotator", Role.ANNOTATOR, project)
    return ops, Client(url, app_token), Client(url, annotator_token)


def _key(username: str, role: str, *projects) -> str:
    """A working key for a simulation account: keys are shown once, so a returning one gets a new one."""
    user, key = account_upsert(username=username, role=role, projects=projects)
    return key or token_issue(user=user).secret


class _HelpFormatter(DjangoHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Django's option order, with every option's default shown."""


class Command(BaseCommand):
    help = ("Run the flywheel by itself on scikit-learn's handwritten digits: traffic, end-user corrections, "
            "annotators, drift checks and retraining through the gate, against the service through the client.")

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=_HelpFormatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=12, help="Rounds of traffic, labeling and retraining.")
        parser.add_argument("--traffic", type=int, default=150, help="Predictions per round.")
        parser.add_argument("--labels-per-round", type=int, default=20, help="What annotators label per round.")
        parser.add_argument("--annotator-error", type=float, default=0.05,
                            help="Share of labels simulated annotators get wrong.")
        parser.add_argument("--feedback-share", type=float, default=0.3,
                            help="Share of wrong predictions end users correct.")
        parser.add_argument("--shift-round", type=int, default=None,
                            help="First round of shifted traffic (unset: half-way, and never before round 2, so "
                                 "at least one round is unshifted).")
        parser.add_argument("--shift", choices=simulation.SHIFTS, default="noise",
                            help="What the shift changes: pixel noise, or the mix of digits users write.")
        parser.add_argument("--initial-labels", type=int, default=60, help="The slice the first model learns from.")
        parser.add_argument("--gold", type=int, default=400, help="Digits with known answers the gate judges on.")
        parser.add_argument("--test", type=int, default=300, help="Held-out digits that measure true accuracy.")
        parser.add_argument("--uncertainty-threshold", type=float,
                            default=simulation.SimulationConfig.uncertainty_threshold,
                            help="Margin score from which uncertainty routing sends a prediction to the queue.")
        parser.add_argument("--audit-share", type=float, default=simulation.SimulationConfig.audit_share,
                            help="Uncertainty routing's audit sample, as a share of what annotators label per round.")
        parser.add_argument("--keep-resolved", action="store_true",
                            help="Keep uncertainty-routed tasks whose label end-user feedback resolved in the queue.")
        parser.add_argument("--seed", type=int, default=0, help="The first seed.")
        parser.add_argument("--seeds", type=int, default=1,
                            help="Run this many seeds from --seed on and compare the strategies' mean curves.")
        parser.add_argument("--strategy", choices=[*simulation.STRATEGIES, "both"], default="both",
                            help="Routing to simulate; 'both' compares them from the same seed.")
        parser.add_argument("--url", help="A running service to use (unset: start one in this process).")
        parser.add_argument("--plot", default=str(Path(settings.BASE_DIR) / "var" / "simulation.png"),
                            help="Where the plot goes; its figures go beside it as JSON, and the service's logs "
                                 "as .log unless -v 2.")
        parser.add_argument("--quiet", action="store_true", help="No progress bar and no table.")

    def handle(self, *args, **options):
        if options["seeds"] < 1 or options["rounds"] < 1:
            raise CommandError("--seeds and --rounds must be at least 1.")
        if options["shift_round"] is not None and not 1 <= options["shift_round"] <= options["rounds"]:
            raise CommandError(f"--shift-round must be between 1 and --rounds ({options['rounds']}).")
        plot_path = Path(options["plot"])
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        # The service, Celery and matplotlib log as they work: to a file unless -v 2, so
        # that the console shows the table alone.
        to_file = options["verbosity"] < 2
        with logs_to_file(plot_path.with_suffix(".log")) if to_file else contextlib.nullcontext(sys.stderr) as console:
            self._run(options, plot_path, console)

    def _run(self, options, plot_path: Path, console) -> None:
        seeds = range(options["seed"], options["seed"] + options["seeds"])
        strategies = simulation.STRATEGIES if options["strategy"] == "both" else (options["strategy"],)
        by_seed = []
        with (_Server() if not options["url"] else _Given(options["url"])) as url:
            for seed in seeds:
                config = simulation.SimulationConfig(
                    rounds=options["rounds"], traffic=options["traffic"], labels_per_round=options["labels_per_round"],
                    annotator_error=options["annotator_error"], feedback_share=options["feedback_share"],
                    shift_round=options["shift_round"], shift=options["shift"],
                    initial_labels=options["initial_labels"],
                    gold=options["gold"], test=options["test"], seed=seed,
                    uncertainty_threshold=options["uncertainty_threshold"], audit_share=options["audit_share"],
                    skip_resolved=not options["keep_resolved"],
                )
                by_seed.append(self._one_seed(url, config, strategies, quiet=options["quiet"], console=console))
        summary = {"config": {**config.__dict__, "seeds": list(seeds)},
                   "runs": [{"seed": seed, "results": [r.as_dict() for r in results]}
                            for seed, results in zip(seeds, by_seed, strict=True)]}
        out = self.stdout.write
        if len(by_seed) == 1:
            shown = by_seed[0]
            simulation.plot(shown, str(plot_path), shift=config.shift)
        else:
            shown = [simulation.mean_result([results[i] for results in by_seed]) for i in range(len(strategies))]
            simulation.plot(shown, str(plot_path), title=f"The flywheel on handwritten digits: mean of {len(seeds)} "
                                                          f"seeds", shift=config.shift)
            summary["mean"] = [r.as_dict() for r in shown]
        if len(strategies) == 2:
            per_seed = [simulation.compare(*results) for results in by_seed]
            for seed, comparison in zip(seeds, per_seed, strict=True):
                comparison["seed"] = seed
                if len(by_seed) > 1:
                    out(f"seed {seed}: {_verdict(comparison)}")
            summary["comparison"] = per_seed[0] if len(by_seed) == 1 else simulation.compare(*shown)
            summary["comparison_per_seed"] = per_seed
            prefix = "" if len(by_seed) == 1 else f"mean of {len(seeds)} seeds: "
            out(prefix + _verdict(summary["comparison"]))
        plot_path.with_suffix(".json").write_text(json.dumps(summary, indent=2))
        logs = f", logs: {plot_path.with_suffix('.log')}" if options["verbosity"] < 2 else ""
        out(f"plot: {plot_path} (figures: {plot_path.with_suffix('.json')}{logs})")

    def _one_seed(self, url: str, config: simulation.SimulationConfig, strategies, *, quiet: bool, console):
        from tqdm import tqdm

        results = []
        for strategy in strategies:
            slug = f"sim-{strategy}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"
            ops, app, annotator = simulation_clients(url, slug, seed=config.seed)
            bar = tqdm(total=config.rounds * 5 + 1, desc=f"{strategy} routing, seed {config.seed}", unit="step",
                       disable=quiet, file=console)
            runner = simulation.Simulation(strategy=strategy, slug=slug, config=config, ops=ops, app=app,
                                           annotator=annotator, progress=lambda step, bar=bar: bar.update(1))
            runner.setup()
            bar.update(1)
            result = simulation.SimulationResult(strategy=strategy, project=slug)
            if not quiet:
                tqdm.write(f"\n{strategy} routing, seed {config.seed} ({slug})")
                tqdm.write(_header())
            for number in range(1, config.rounds + 1):
                row = runner.round(number)
                result.rounds.append(row)
                if not quiet:
                    tqdm.write(_row(row))
            bar.close()
            results.append(result)
        return results


def _verdict(c: dict) -> str:
    if c["share"] is None:
        return (f"uncertainty routing never reached random routing's final accuracy ({c['random_final_accuracy']:.3f} "
                f"with {c['random_labels']} labels; it ended at {c['uncertainty_final_accuracy']:.3f})")
    return (f"random routing ended at {c['random_final_accuracy']:.3f} accuracy with {c['random_labels']} labels; "
            f"uncertainty routing reached it with {c['uncertainty_labels_to_reach']} labels: {c['share']:.0%} of them "
            f"(it ended at {c['uncertainty_final_accuracy']:.3f})")


class _Given:
    def __init__(self, url: str):
        self.url = url

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc):
        return None


def _header() -> str:
    return f"{'round':>5} {'labels':>6} {'true acc':>9} {'estimated (95% interval)':>26} {'drift':>12} {'champion':>10}"


def _row(row: simulation.RoundResult) -> str:
    estimate = "-" if row.estimate is None else f"{row.estimate:.3f} ({row.low:.3f}-{row.high:.3f})"
    drift = "-" if row.drifted is None else (f"yes ({row.drifted_fields})" if row.drifted else "no")
    champion = row.champion + (" *" if row.promoted else "")
    shift = " shifted" if row.shifted else ""
    return (f"{row.round:>5} {row.labels:>6} {row.true_accuracy:>9.3f} {estimate:>26} {drift:>12} "
            f"{champion:>10}{shift}")
