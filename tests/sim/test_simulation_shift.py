"""The simulation's class-mix shift: traffic and true accuracy follow the new mix."""

import numpy as np
import pytest

from sim.simulation import Digits, Simulation, SimulationConfig

MIX = SimulationConfig(shift="class_mix", shift_classes=("3", "5", "8"), shift_class_share=0.6, seed=4)


def test_the_class_mix_gives_the_digits_that_take_over_their_share_of_the_traffic():
    digits = Digits(MIX)
    weights = digits.class_weights(MIX)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["3"] == pytest.approx(0.2) and weights["0"] == pytest.approx(0.4 / 7)
    p = digits.mix_probabilities(digits.pool, MIX)
    drawn = np.random.default_rng(0).choice(digits.pool, 20_000, p=p)
    share = np.isin(digits.y[drawn], ["3", "5", "8"]).mean()
    assert share == pytest.approx(0.6, abs=0.015)


class _KnowsOnlyThrees:
    """A champion right on every 3 and wrong on every other digit."""

    def predict(self, numeric, categorical):
        return ["3"] * len(numeric), np.ones(len(numeric))


def test_true_accuracy_after_a_class_mix_shift_weighs_each_digit_by_its_new_share():
    simulation = Simulation(strategy="random", slug="s", config=MIX, ops=None, app=None, annotator=None)
    simulation.champion = _KnowsOnlyThrees()
    threes = np.mean(simulation.digits.y[simulation.digits.test] == "3")
    assert simulation.true_accuracy(shifted=False) == pytest.approx(threes)
    assert simulation.true_accuracy(shifted=True) == pytest.approx(0.2)


def test_an_unknown_shift_is_refused():
    with pytest.raises(ValueError, match="shift"):
        SimulationConfig(shift="seasons")


def test_the_default_shift_leaves_at_least_one_unshifted_round():
    from sim.simulation import SimulationConfig

    assert SimulationConfig(rounds=3).shift_at == 2
    assert SimulationConfig(rounds=2).shift_at == 2
    assert SimulationConfig(rounds=12).shift_at == 6
    assert SimulationConfig(rounds=3, shift_round=1).shift_at == 1


def test_a_shift_round_outside_the_rounds_is_refused(tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--shift-round must be between 1 and --rounds"):
        call_command("flywheel_simulate", rounds=3, shift_round=4, plot=str(tmp_path / "s.png"))
