"""The shadow simulation: the live gate on simulated live traffic decides sooner with
disagreement routing than with the audit sample alone, and promotes no worse challenger."""

from django.core.management import call_command

from sim.shadow import ShadowConfig, simulate


def test_disagreement_routing_decides_on_fewer_labels_and_never_promotes_a_worse_model():
    result = simulate(ShadowConfig(seeds=4))
    summary = result.summary()
    assert {s.truly for s in result.seeds} == {"better", "worse"}
    for strategy in ("disagreement", "audit"):
        assert summary[strategy]["worse_promoted"] == 0
    assert summary["disagreement"]["decided"] == 4 and summary["disagreement"]["better_held_back"] == 0
    assert summary["disagreement"]["mean_labels_to_verdict"] < summary["audit"]["mean_labels_to_verdict"]
    # Right about every challenger: better promoted, worse retired.
    assert all(s.verdicts["disagreement"] == s.truly for s in result.seeds)
    # The interval after a fixed amount of traffic is checked against the true difference.
    assert all(set(s.covered) == {"disagreement", "audit"} for s in result.seeds)
    assert summary["disagreement"]["interval_held"] >= 3


def test_the_command_prints_the_figures_and_writes_them(tmp_path, capsys):
    out = tmp_path / "shadow.json"
    call_command("flywheel_simulate_shadow", "--seeds", "2", "--output", str(out))
    printed = capsys.readouterr().out
    assert "disagreement" in printed and "mean labels to a verdict" in printed and "interval held" in printed
    assert '"summary"' in out.read_text()
