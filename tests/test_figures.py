"""What a reader reads in a figure, checked on matplotlib objects (not pixels): no code names or tuples in
titles, labels and legends, no legend entry that draws nothing; every committed figure's text file passes."""
import json

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from earlyexit.paths import project_root  # noqa: E402
from earlyexit.studies.plots import (figure_problems, figure_text, panels_legend, network_title,  # noqa: E402
                                     save_figure)


def test_a_figure_a_paper_would_print_passes(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([0.2, 0.5], [80, 85], label="max-softmax")
    ax.scatter([1.0], [86], label="plain backbone")
    ax.bar([0.3], [5], label="share")                              # containers: bars and error bars
    ax.errorbar([0.4], [81], yerr=[1], label="seed mean")
    ax.set(title=network_title("vgg13", 0.5, "cifar10"), xlabel="gate $g_b(x)$", ylabel="test accuracy (%)")
    ax.legend()
    assert figure_problems(figure_text(fig)) == []
    monkeypatch.setenv("EARLYEXIT_OUTPUT", str(tmp_path))
    save_figure(fig, "good", "smoke")
    saved = json.loads((tmp_path / "figures" / "smoke" / "good.json").read_text())
    assert saved["axes"][0]["title"] == "VGG-13 ×0.5, CIFAR-10" and saved["axes"][0]["legend"][0]["drawn"]
    plt.close(fig)


def test_tuples_code_names_and_empty_legend_entries_are_found():
    fig, ax = plt.subplots()
    ax.plot([], [], label="BranchyNet")                       # in the legend, draws nothing
    ax.plot([1, 2], [3, 4], label="vgg13_c10 seed 0")
    ax.set(title=str(("vgg13 x0.5 / cifar10", 0)) + ": equal training time")
    ax.legend()
    problems = figure_problems(figure_text(fig))
    assert any("title has a code name" in p for p in problems)
    assert any("draws nothing: 'BranchyNet'" in p for p in problems)
    assert any("code name: 'vgg13_c10 seed 0'" in p for p in problems)
    plt.close(fig)


def test_paper_size_lays_side_by_side_panels_out_again_and_keeps_the_screen_layout(tmp_path, monkeypatch):
    """Laid out once at screen size, three panels keep that spacing on a smaller page with larger fonts unless
    save_figure lays them out again: then titles and y labels run into the next panel."""
    fig, axes = plt.subplots(1, 3, figsize=(18, 4))
    for ax in axes:
        ax.plot([0, 1], [50, 90], label="E2CM")
        ax.set(title="headline: one epoch of training", xlabel="MACs / plain backbone", ylabel="test accuracy (%)")
    fig.tight_layout()
    screen = [ax.get_position().bounds for ax in axes]
    overlaps = []

    def check_at_paper_size(*args, **kwargs):
        renderer = fig.canvas.get_renderer()
        boxes = [ax.get_tightbbox(renderer) for ax in axes]
        overlaps.append(any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:])))

    monkeypatch.setattr(fig, "savefig", check_at_paper_size)
    monkeypatch.setenv("EARLYEXIT_OUTPUT", str(tmp_path))
    save_figure(fig, "panels", "smoke")
    assert overlaps == [False, False]                                 # PNG and PDF
    assert [ax.get_position().bounds for ax in axes] == screen
    plt.close(fig)


def test_one_panels_legend_lists_each_drawn_label_once():
    fig, axes = plt.subplots(1, 2, layout="constrained")
    axes[0].plot([0, 1], [1, 2], label="E2CM")
    axes[0].plot([0, 1], [2, 3], label="SDN heads, 1 epoch")
    axes[1].plot([0, 1], [1, 3], label="E2CM")
    axes[1].plot([], [], label="BranchyNet")
    axes[1].legend()
    panels_legend(fig)
    text = figure_text(fig)
    assert [e["label"] for e in text["legend"]] == ["E2CM", "SDN heads, 1 epoch", "BranchyNet"]
    assert all(ax["legend"] == [] for ax in text["axes"])            # the panels' own legends are gone
    assert figure_problems(text) == ["figure legend entry draws nothing: 'BranchyNet'"]
    plt.close(fig)


COMMITTED = sorted((project_root() / "figures" / "cpu").glob("*.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_every_committed_cpu_figure_reads_as_a_paper_figure(path):
    assert figure_problems(json.loads(path.read_text())) == []


def test_a_figure_of_several_seeds_needs_an_interval():
    fig, ax = plt.subplots()
    ax.plot([0.2, 0.5], [80, 85], label="mean of 3 seeds")
    assert figure_problems(figure_text(fig, seeds=1)) == []
    assert any("draws no seed interval" in p for p in figure_problems(figure_text(fig, seeds=3)))
    ax.fill_between([0.2, 0.5], [79, 84], [81, 86], alpha=0.2)
    assert figure_problems(figure_text(fig, seeds=3)) == []
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.errorbar([0.4], [81], yerr=[1], label="seed mean")
    assert figure_text(fig, seeds=3)["axes"][0]["intervals"] == 1 and figure_problems(figure_text(fig, seeds=3)) == []
    plt.close(fig)


def test_e2cm_claim_figure_draws_each_methods_seed_mean_with_its_interval():
    import pandas as pd
    from earlyexit.studies.e2cm import plot_budget_means
    rows = [{"backbone": "b", "seed": s, "search split": "val", "method": m, "budget": 0.3,
             "test accuracy": 0.6 + 0.01 * s + (0.05 if m == "E2CM" else 0), "test cost": 0.28}
            for s in range(3) for m in ("E2CM", "SDN (1 epoch)")]
    rows.append({**rows[0], "method": "SDN (1 epoch)", "budget": 0.1, "test accuracy": float("nan")})
    fig, ax = plt.subplots()
    plot_budget_means(ax, pd.DataFrame(rows), "val", "b", ["E2CM", "SDN (1 epoch)"], [0.1, 0.3])
    bars = ax.containers
    assert len(bars) == 2                                   # one per method at 0.3; none where no point exists
    assert abs(bars[0].lines[0].get_ydata()[0] - 66.0) < 1e-9 and figure_text(fig, seeds=3)["axes"][0]["intervals"] == 2
    plt.close(fig)
