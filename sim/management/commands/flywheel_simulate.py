"""flywheel_simulate: run the flywheel by itself on handwritten digits (or a team's own data), through the client."""

import argparse
import contextlib
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, replace
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


def simulation_clients(url: str, slug: str, *, seed: int | None = None,
                       dataset: simulation.Dataset | None = None) -> tuple[Client, Client, Client, Client]:
    """Ops, app and annotator clients for a new simulation project. Earlier simulations'
    projects of the same strategy and seed are deleted (their stored datasets stay under their own
    slugs: dataset manifests are never overwritten). With a `seed`, the project's audit
    salt comes from it: the audit sample, which is all random routing labels, is then the
    same in every run of that seed instead of a new draw each time. The fourth client is a
    second annotator, who labels the single tasks while the first labels groups."""
    ops_token = _key("sim-ops", Role.OPS)
    for old in Project.objects.filter(slug__startswith=slug.rsplit("-", 2)[0] + "-"):
        old.delete()
    ops = Client(url, ops_token)
    policy = simulation.project_policy("uncertainty", simulation.SimulationConfig(), dataset)
    ops.create_project(slug=slug, name=f"Simulation: {slug}", labels=policy["labels"], features=policy["features"])
    if seed is not None:
        Project.objects.filter(slug=slug).update(audit_salt=f"simulation-seed-{seed}")
    project = Project.objects.get(slug=slug)
    app_token = _key("sim-app", Role.APP, project)
    annotator_token = _key("sim-annotator", Role.ANNOTATOR, project)
    checker_token = _key("sim-checker", Role.ANNOTATOR, project)
    return ops, Client(url, app_token), Client(url, annotator_token), Client(url, checker_token)


def _key(username: str, role: str, *projects) -> str:
    """A working key for a simulation account: keys are shown once, so a returning one gets a new one."""
    user, key = account_upsert(username=username, role=role, projects=projects)
    return key or token_issue(user=user).secret


class _HelpFormatter(DjangoHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Django's option order, with every option's default shown."""


class Command(BaseCommand):
    help = ("Run the flywheel by itself on scikit-learn's handwritten digits (or --data FILE): traffic, end-user "
            "corrections, annotators (labeling single tasks, or groups with --grouping), drift checks and retraining "
            "through the gate, against the service through the client.")

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
        parser.add_argument("--grouping", choices=("off", "on", "both"), default="off",
                            help="Annotators label groups (on), single tasks (off), or both runs from the same seed, "
                                 "for the same annotator time. Grouping runs with uncertainty routing: audit tasks, "
                                 "all random routing sends, are never grouped.")
        parser.add_argument("--grouping-threshold", type=float,
                            default=simulation.SimulationConfig.grouping_threshold,
                            help="With grouping on, the margin score from which uncertainty routing routes.")
        parser.add_argument("--group-share", type=float, default=simulation.SimulationConfig.group_share,
                            help="With grouping on, the share of a round's time spent on groups first.")
        parser.add_argument("--group-target-size", type=int, default=simulation.SimulationConfig.group_target_size,
                            help="With grouping on, about how many tasks a group holds "
                                 "(labeling.grouping.target_size).")
        parser.add_argument("--group-check-rate", type=float, default=simulation.SimulationConfig.group_check_rate,
                            help="Share of group-labeled members checked individually by another annotator.")
        time = simulation.AnnotatorTime()
        parser.add_argument("--single-task-seconds", type=float, default=time.single_task_s,
                            help="What a single task costs an annotator.")
        parser.add_argument("--group-seconds", type=float, default=time.group_s,
                            help="What taking in a group costs, before its members.")
        parser.add_argument("--member-seconds", type=float, default=time.per_member_s,
                            help="What looking at each member of a group costs.")
        parser.add_argument("--misfit-spotted", type=float, default=time.misfit_spotted,
                            help="Chance that an annotator spots (and takes out) a member that does not belong.")
        parser.add_argument("--shadow", action="store_true",
                            help="Shadow mode: each round's candidate goes into shadow (retraining.live_gate on) and "
                                 "the live gate decides on live traffic; uncertainty routing's run labels the "
                                 "disagreements, random routing's judges on its audit sample alone.")
        parser.add_argument("--live-min-labels", type=int, default=simulation.SimulationConfig.live_min_labels,
                            help="With --shadow, labeled disagreements the live gate needs before it decides "
                                 "(retraining.live_gate.min_labels).")
        parser.add_argument("--shadow-rounds", type=int, default=simulation.SimulationConfig.shadow_rounds,
                            help="With --shadow, rounds after which ops take an undecided challenger out of shadow "
                                 "(held back) so that training resumes.")
        parser.add_argument("--data", help="A CSV or Parquet file to simulate on instead of the digits: numeric "
                                           "feature columns and a label column.")
        parser.add_argument("--label-column", default="label", help="With --data, the column holding the labels.")
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
        if options["grouping"] == "on" and options["strategy"] == "random":
            raise CommandError("--grouping on needs uncertainty routing: random routing sends only audit tasks, "
                               "which are never grouped.")
        if options["shadow"] and options["grouping"] != "off":
            raise CommandError("--shadow runs with grouping off: it measures the live gate, not grouping.")
        if options["live_min_labels"] < 1 or options["shadow_rounds"] < 1:
            raise CommandError("--live-min-labels and --shadow-rounds must be at least 1.")
        for name in ("group_share", "group_check_rate", "misfit_spotted"):
            if not 0 <= options[name] <= 1:
                raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 1.")
        options["dataset"] = None
        if options["data"]:
            try:
                options["dataset"] = simulation.Dataset.from_file(options["data"],
                                                                  label_column=options["label_column"])
            except simulation.DataError as exc:
                raise CommandError(str(exc)) from exc
            rows = len(options["dataset"].y)
            needed = options["test"] + options["gold"] + options["initial_labels"] + options["traffic"]
            if rows < needed:
                raise CommandError(f"{options['data']}: {rows} rows are too few for --test {options['test']}, --gold "
                                   f"{options['gold']}, --initial-labels {options['initial_labels']} and a round of "
                                   f"--traffic {options['traffic']} ({needed}); lower them.")
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
        groupings = {"off": (False,), "on": (True,), "both": (False, True)}[options["grouping"]]
        # Grouping runs with uncertainty routing only (random routing's audit tasks are never grouped).
        runs = [(strategy, grouping) for strategy in strategies for grouping in groupings
                if not (grouping and strategy != "uncertainty")]
        dataset = options["dataset"]
        data_name = "handwritten digits" if dataset is None else Path(options["data"]).name
        time_model = simulation.AnnotatorTime(
            single_task_s=options["single_task_seconds"], group_s=options["group_seconds"],
            per_member_s=options["member_seconds"], misfit_spotted=options["misfit_spotted"])
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
                    skip_resolved=not options["keep_resolved"], grouping_threshold=options["grouping_threshold"],
                    group_share=options["group_share"], group_target_size=options["group_target_size"],
                    group_check_rate=options["group_check_rate"],
                    annotator_time=time_model, shadow=options["shadow"],
                    live_min_labels=options["live_min_labels"], shadow_rounds=options["shadow_rounds"],
                )
                by_seed.append(self._one_seed(url, config, runs, dataset=dataset, quiet=options["quiet"],
                                              console=console))
        summary = {"config": {**asdict(config), "grouping": options["grouping"], "seeds": list(seeds),
                              "data": options["data"] or "digits", "label_column": options["label_column"]},
                   "runs": [{"seed": seed, "results": [r.as_dict() for r in results]}
                            for seed, results in zip(seeds, by_seed, strict=True)]}
        out = self.stdout.write
        if len(by_seed) == 1:
            shown = by_seed[0]
            title = f"The flywheel on {data_name}"
        else:
            shown = [simulation.mean_result([results[i] for results in by_seed]) for i in range(len(runs))]
            title = f"The flywheel on {data_name}: mean of {len(seeds)} seeds"
            summary["mean"] = [r.as_dict() for r in shown]
        simulation.plot(shown, str(plot_path), title=title, shift=config.shift)
        if len(groupings) == 2:
            self._grouping_figures(summary, by_seed, shown, runs, seeds, plot_path, data_name)
        if ("uncertainty", False) in runs and ("random", False) in runs:
            single_task_runs = [[r for r in results if not r.grouping] for results in by_seed]
            shown_strategies = [r for r in shown if not r.grouping]
            per_seed = [simulation.compare(*results) for results in single_task_runs]
            for seed, comparison in zip(seeds, per_seed, strict=True):
                comparison["seed"] = seed
                if len(by_seed) > 1:
                    out(f"seed {seed}: {_verdict(comparison)}")
            summary["comparison"] = per_seed[0] if len(by_seed) == 1 else simulation.compare(*shown_strategies)
            summary["comparison_per_seed"] = per_seed
            prefix = "" if len(by_seed) == 1 else f"mean of {len(seeds)} seeds: "
            out(prefix + _verdict(summary["comparison"]))
        if options["shadow"]:
            self._shadow_figures(summary, by_seed, seeds)
        plot_path.with_suffix(".json").write_text(json.dumps(summary, indent=2))
        logs = f", logs: {plot_path.with_suffix('.log')}" if options["verbosity"] < 2 else ""
        out(f"plot: {plot_path} (figures: {plot_path.with_suffix('.json')}{logs})")

    def _shadow_figures(self, summary, by_seed, seeds) -> None:
        """The live gate per seed and over all seeds' candidates: labels to a verdict with
        disagreement routing against the audit sample alone, and its wrong decisions."""
        per_seed = []
        for seed, results in zip(seeds, by_seed, strict=True):
            comparison = simulation.compare_shadow(results)
            per_seed.append({"seed": seed, **comparison})
            self.stdout.write(f"seed {seed}: " + "; ".join(_shadow_verdict(arm, f) for arm, f in comparison.items()))
        arms = {simulation.SHADOW_ARMS[r.strategy]: r.strategy for r in by_seed[0]}
        overall = {arm: simulation.shadow_figures([d for results in by_seed for r in results if r.strategy == strategy
                                                   for d in r.shadow_decisions])
                   for arm, strategy in arms.items()}
        summary["shadow_comparison"] = overall
        summary["shadow_comparison_per_seed"] = per_seed
        for arm, figures in overall.items():
            self.stdout.write(f"{len(by_seed)} seeds: {_shadow_verdict(arm, figures)}")

    def _grouping_figures(self, summary, by_seed, shown, runs, seeds, plot_path: Path, data_name: str) -> None:
        """Grouping on against off (uncertainty routing): per seed and on the mean curves,
        with its own plot beside the main one."""
        off, on = runs.index(("uncertainty", False)), runs.index(("uncertainty", True))
        per_seed = []
        for seed, results in zip(seeds, by_seed, strict=True):
            comparison = simulation.compare_grouping(results[off], results[on])
            per_seed.append({"seed": seed, **comparison})
            if len(by_seed) > 1:
                self.stdout.write(f"seed {seed}: {_grouping_verdict(comparison)}")
        if len(by_seed) == 1:
            mean = per_seed[0]
        else:
            mean = simulation.compare_grouping(shown[off], shown[on])
            # The interval's coverage is counted over every seed's rounds, not read off mean curves.
            held = sum(c["rounds_interval_held"] for c in per_seed)
            estimated = sum(c["rounds_with_estimate"] for c in per_seed)
            mean.update(rounds_interval_held=held, rounds_with_estimate=estimated,
                        interval_coverage=held / estimated if estimated else None, group_label_estimate=None)
        summary["grouping_comparison"] = mean
        summary["grouping_comparison_per_seed"] = per_seed
        prefix = "" if len(by_seed) == 1 else f"mean of {len(by_seed)} seeds: "
        self.stdout.write(prefix + _grouping_verdict(mean))
        grouping_plot = plot_path.with_name(plot_path.stem + "-grouping.png")
        suffix = "" if len(by_seed) == 1 else f": mean of {len(by_seed)} seeds"
        simulation.plot_grouping(shown[off], shown[on], str(grouping_plot),
                                 title=f"Grouping on {data_name}, same annotator time{suffix}")
        self.stdout.write(f"grouping plot: {grouping_plot}")

    def _one_seed(self, url: str, config: simulation.SimulationConfig, runs, *, dataset, quiet: bool, console):
        from tqdm import tqdm

        results = []
        for strategy, grouping in runs:
            kind = "grouped" if grouping else strategy
            # The seed in the slug: an earlier run's projects of the same kind and seed are
            # deleted, and runs of other seeds (in other processes) are left alone.
            slug = f"sim-{kind}-s{config.seed}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"
            ops, app, annotator, checker = simulation_clients(url, slug, seed=config.seed, dataset=dataset)
            run_config = replace(config, grouping=grouping)
            name = f"{strategy} routing" + (", grouping on" if grouping else "")
            bar = tqdm(total=config.rounds * 5 + 1, desc=f"{name}, seed {config.seed}", unit="step",
                       disable=quiet, file=console)
            runner = simulation.Simulation(strategy=strategy, slug=slug, config=run_config, ops=ops, app=app,
                                           annotator=annotator, checker=checker, dataset=dataset,
                                           progress=lambda step, bar=bar: bar.update(1))
            runner.setup()
            bar.update(1)
            result = simulation.SimulationResult(strategy=strategy, project=slug, grouping=grouping)
            if not quiet:
                tqdm.write(f"\n{name}, seed {config.seed} ({slug})")
                tqdm.write(_header())
            for number in range(1, config.rounds + 1):
                row = runner.round(number)
                result.rounds.append(row)
                if not quiet:
                    tqdm.write(_row(row))
            runner.finish()
            result.shadow_decisions = list(runner.decisions)
            bar.close()
            results.append(result)
        return results


def _grouping_verdict(c: dict) -> str:
    def number(value, form):
        return "-" if value is None else format(value, form)

    return (f"grouping on labeled {number(c['items_per_minute_on'], '.1f')} items per annotator-minute against "
            f"{number(c['items_per_minute_off'], '.1f')} off ({number(c['speedup'], '.1f')}x); group labels "
            f"{number(c['group_label_accuracy'], '.3f')} right against single tasks' "
            f"{number(c['single_label_accuracy'], '.3f')}; the checks' interval held the true group-label accuracy in "
            f"{c['rounds_interval_held']} of {c['rounds_with_estimate']} rounds; model accuracy "
            f"{c['final_accuracy_on']:.3f} on, {c['final_accuracy_off']:.3f} off")


def _shadow_verdict(arm: str, f: dict) -> str:
    mean = "-" if f["mean_labels_to_verdict"] is None else f"{f['mean_labels_to_verdict']:.1f}"
    return (f"{arm}: {f['verdicts']} verdicts of {f['challengers']} challengers ({f['promoted']} promoted, "
            f"{f['retired']} retired, {f['held_back']} held back undecided, {f['undecided_at_end']} still in shadow at "
            f"the end), mean labels to a verdict {mean}, truly worse promoted {f['worse_promoted']} of "
            f"{f['truly_worse']}, truly better by 2+ points held back {f['better_held_back']} of "
            f"{f['truly_better_by_2_points']} (still undecided at the end {f['better_undecided_at_end']})")


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
    return (f"{'round':>5} {'labels':>6} {'minutes':>7} {'true acc':>9} {'estimated (95% interval)':>26} "
            f"{'without labels (95%)':>28} {'drift':>12} {'champion':>10}")


def _row(row: simulation.RoundResult) -> str:
    estimate = "-" if row.estimate is None else f"{row.estimate:.3f} ({row.low:.3f}-{row.high:.3f})"
    free = row.label_free
    label_free = "-" if free is None else (f"{free['value']:.3f} ({free['low']:.3f}-{free['high']:.3f})"
                                           + ("" if free["consistent_with_audit"] else " !"))
    drift = "-" if row.drifted is None else (f"yes ({row.drifted_fields})" if row.drifted else "no")
    champion = row.champion + (" *" if row.promoted else "")
    shift = " shifted" if row.shifted else ""
    if row.shadow is not None:
        labeled = row.shadow["labeled"]
        shift += (f"  shadow {row.shadow['model']}: {row.shadow['verdict']} ({labeled['disagreement']} disagreements, "
                  f"{labeled['audit']} audit labeled)")
    minutes = row.annotator_seconds / 60
    return (f"{row.round:>5} {row.items_labeled:>6} {minutes:>7.1f} {row.true_accuracy:>9.3f} {estimate:>26} "
            f"{label_free:>28} {drift:>12} {champion:>10}{shift}")
