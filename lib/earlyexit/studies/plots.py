"""One figure style for every notebook, and saving figures under figures/<profile>/ for papers.

Notebooks draw at screen size; ``save_figure`` writes each figure twice, as PNG (300 dpi) and as vector
PDF, re-laid out for a two-column paper: 3.5 in wide (one column) or 7.16 in (both columns, for figures
drawn wider than 7 in), the height scaled with the width, and every text in the same small set of font
sizes. The figure on screen is left as it was drawn. Beside them, <name>.json holds the figure's titles,
axis labels, legend entries and seed intervals (``figure_text``), so that tests can check what a reader
reads (``figure_problems``: no code names, no legend entry that draws nothing, intervals wherever the figure
summarises several training seeds) without the figure's objects.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.collections import PolyCollection
from matplotlib.container import Container, ErrorbarContainer
from matplotlib.layout_engine import PlaceHolderLayoutEngine
from matplotlib.text import Text
from matplotlib.transforms import offset_copy

from .. import rehearsal
from ..data import dataset_title
from ..paths import output_root, project_root

__all__ = ["use_style", "legend_below", "network_title", "method_style", "figure_text", "figure_problems", "save_figure", "figure_dir", "accuracy_vs_cost", "exit_histogram", "stacked_exit_shares",
           "budget_calibration", "fronts_with_bands", "PAPER_WIDTHS", "PAPER_FONT_SIZES"]

# widths of a two-column paper (IEEE / ACM style), inches
PAPER_WIDTHS = {"column": 3.5, "page": 7.16}
# font sizes (points) of the saved files; screen figures keep the notebook style
PAPER_FONT_SIZES = {"title": 8, "label": 8, "tick": 7, "legend": 7, "text": 7}
PAPER_DPI = 300
# no dates or tool versions in the files, so a rerun writes identical bytes
_PNG_METADATA = {"Software": None}
_PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}


# backbone registry names as a paper prints them
BACKBONE_TITLES = {"vgg13": "VGG-13", "vgg_small": "VGG-small", "resnet18_cifar": "ResNet-18",
                   "resnet50_cifar": "ResNet-50", "resnet56_cifar": "ResNet-56", "alexnet_cifar": "AlexNet",
                   "alexnet": "AlexNet", "airnet": "AirNet", "conv_autoencoder": "conv. autoencoder",
                   "torchvision": "torchvision model",
                   # torchvision builders (notebook 06 wraps them)
                   "resnet18": "ResNet-18", "resnet34": "ResNet-34", "mobilenet_v3_small": "MobileNetV3-Small",
                   "mobilenet_v2": "MobileNetV2", "efficientnet_b0": "EfficientNet-B0", "convnext_tiny": "ConvNeXt-T"}


# one colour and marker per exit rule, the same in every notebook (seaborn's colour-blind palette)
# (an int is a palette index)
_RULE_STYLES = {"max-softmax": (0, "o"), "entropy": (1, "s"), "patience (PABEE)": (2, "^"),
                "confidence baseline (CR)": (3, "v"), "EENet": (4, "D"), "class exclusion": (5, "P"),
                "E2CM": (9, "X"), "SDN": ("olive", "h"), "BranchyNet": ("0.25", "*"), "gates (diff. branching)": (6, "p")}
# other names of the same rules in the notebooks (04 follows EENet's paper)
_ALIASES = {"max-prob": "max-softmax", "patience": "patience (PABEE)"}
# variants drawn beside their rule: its colour and marker, their own line
_VARIANT_LINES = {"E2CM (pooled)": "--", "E2CM+SDN (no limit)": ":", "SDN (1 epoch)": "-", "SDN (equal time)": "--",
                  "SDN (no limit)": ":", "BranchyNet (1 epoch)": "-",
                  # 04: the paper's baselines under their papers' names, and the same rules searched (ours)
                  "max-softmax (MSDNet)": "-", "entropy (BranchyNet)": "-", "max-softmax, searched": ":",
                  "entropy, searched": ":"}


def method_style(label: str, index: int = 0) -> dict:
    """Line style of a method (``ax.plot(..., **method_style(label))``): a fixed colour and marker for the
    library's rules; a variant ("E2CM (pooled)", "SDN (1 head epoch)") keeps its rule's colour with a dashed
    line and hollow markers; anything else by position."""
    palette = sns.color_palette("colorblind", 10)
    for alias, rule in _ALIASES.items():
        if label.startswith(alias) and not label.startswith(rule):
            label = rule + label[len(alias):]
    for rule, (colour, marker) in _RULE_STYLES.items():
        if label == rule:
            return {"color": palette[colour] if isinstance(colour, int) else colour, "marker": marker, "ls": "-"}
    for rule, (colour, marker) in _RULE_STYLES.items():
        if any(label.startswith(rule + sep) for sep in (" ", "+", ",")):
            return {"color": palette[colour] if isinstance(colour, int) else colour, "marker": marker,
                    "ls": _VARIANT_LINES.get(label, "--"), "mfc": "none"}
    return {"color": palette[index % 10], "marker": "o", "ls": "-"}


def legend_below(ax: plt.Axes, columns: int = 1) -> None:
    """The axes' legend under its x label, where it hides no data (for panels side by side). Its distance
    from the axes is set in points from the tick and label fonts, not as a fraction of the axes' height, so
    it clears the x label however flat ``save_figure`` makes the axes at paper size."""
    ticks = ax.xaxis.get_ticklabels()
    tick_size = ticks[0].get_size() if ticks else plt.rcParams["xtick.labelsize"]
    if isinstance(tick_size, str):
        tick_size = plt.rcParams["font.size"]
    below = 1.4 * (tick_size + ax.xaxis.label.get_size()) + 8
    anchor = offset_copy(ax.transAxes, fig=ax.figure, y=-below, units="points")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=anchor, ncol=columns, frameon=False)


def panels_legend(fig: plt.Figure, columns: int = 3, loc: str = "outside lower center") -> None:
    """One legend for a figure's panels, outside them (under them by default): each label drawn in any panel
    once (a method keeps one style across panels, so one entry stands for all its curves). The figure must use
    ``layout="constrained"``, which keeps room for the legend at every size, paper size included."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(list(handles.values()), list(handles), loc=loc, ncols=columns, frameon=False)


def network_title(backbone: str, width: float | None = None, dataset: str | None = None) -> str:
    """"VGG-13 ×0.25, CIFAR-10" for ("vgg13", 0.25, "cifar10"): what figure titles and legends print
    instead of code names (the width only when it is not 1)."""
    name = BACKBONE_TITLES.get(backbone, backbone)
    if width is not None and width != 1:
        name += f" ×{width:g}"
    return name if dataset is None else f"{name}, {dataset_title(dataset)}"


def use_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": PAPER_DPI, "savefig.bbox": "tight",
                                "axes.titleweight": "bold", "pdf.fonttype": 42, "ps.fonttype": 42})


def figure_dir(profile: str) -> Path:
    return output_root(project_root()) / "figures" / rehearsal.output_profile(profile)


def _text_roles(fig: plt.Figure) -> dict[Text, str]:
    """Every text of the figure with its role (title, label, tick, legend, text)."""
    roles: dict[Text, str] = {}
    for ax in fig.axes:
        for t in (ax.title, ax._left_title, ax._right_title):
            roles[t] = "title"
        for axis in (ax.xaxis, ax.yaxis):
            roles[axis.label] = "label"
            roles[axis.get_offset_text()] = "tick"
            for t in axis.get_ticklabels(which="both"):
                roles[t] = "tick"
        legend = ax.get_legend()
        if legend is not None:
            for t in [*legend.get_texts(), legend.get_title()]:
                roles[t] = "legend"
    for legend in fig.legends:
        for t in [*legend.get_texts(), legend.get_title()]:
            roles[t] = "legend"
    if getattr(fig, "_suptitle", None) is not None:
        roles[fig._suptitle] = "title"
    for t in fig.findobj(Text):
        roles.setdefault(t, "text")
    return roles


def paper_size(fig: plt.Figure) -> tuple[float, float]:
    """One column for figures drawn up to 7 in wide, the full page width beyond; aspect kept (height capped
    at 1.2 times the width)."""
    w, h = fig.get_size_inches()
    width = PAPER_WIDTHS["column"] if w <= 7 else PAPER_WIDTHS["page"]
    return width, min(h * width / w, 1.2 * width)


# a code name in a title or legend: a word with an underscore (vgg13_c10), a registry name of a data set or
# backbone, or a printed Python tuple
_CODE_NAME = re.compile(r"\b\w+_\w+\b|\b(cifar10|cifar100|mnist|vgg13|resnet18|resnet18_cifar)\b|\('")


def _intervals(ax: plt.Axes) -> int:
    """How many interval artists the axes draws: error bars (``errorbar``, bars with ``yerr``) and bands
    (``fill_between``)."""
    bars = sum(1 for c in ax.containers if isinstance(c, ErrorbarContainer) or getattr(c, "errorbar", None))
    bands = sum(1 for c in ax.collections if isinstance(c, PolyCollection) and len(c.get_paths()) > 0)
    return bars + bands


def figure_text(fig: plt.Figure, seeds: int = 1) -> dict:
    """What a reader reads in the figure, from its matplotlib objects: per axes its title, axis labels,
    legend entries (each with whether its artist draws anything) and the number of interval artists; the
    figure-level legend's entries; and ``seeds``, how many training seeds the figure summarises."""
    def drawn(handle) -> bool:
        if isinstance(handle, Container):          # bars, error bars: drawn if any of their artists is
            return any(drawn(child) for child in handle.get_children())
        if hasattr(handle, "get_xydata"):
            return len(handle.get_xydata()) > 0 and handle.get_visible()
        if hasattr(handle, "get_offsets"):
            return len(handle.get_offsets()) > 0 and handle.get_visible()
        return handle.get_visible()

    axes = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison and not ax.get_title():
            continue
        legend = ax.get_legend()
        entries = []
        if legend is not None:
            artists = {label: h for h, label in zip(*ax.get_legend_handles_labels())}
            for text in legend.get_texts():
                label = text.get_text()
                entries.append({"label": label, "drawn": drawn(artists[label]) if label in artists else True})
        axes.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                     "legend": entries, "intervals": _intervals(ax)})
    figure_legend = []
    if fig.legends:
        artists = {label: h for ax in fig.axes for h, label in zip(*ax.get_legend_handles_labels())}
        figure_legend = [{"label": t.get_text(), "drawn": drawn(artists[t.get_text()]) if t.get_text() in artists else True}
                         for legend in fig.legends for t in legend.get_texts()]
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    return {"suptitle": suptitle, "axes": axes, "legend": figure_legend, "seeds": seeds}


def figure_problems(text: dict) -> list[str]:
    """What a paper would not print (``figure_text``'s output): code names or tuples in titles, labels and
    legends, legend entries that draw nothing, a summary of several seeds without a seed interval."""
    def code_name(value: str) -> bool:
        return bool(_CODE_NAME.search(re.sub(r"\$[^$]*\$", "", value)))    # LaTeX math may have g_b

    problems = []
    for where, value in [("suptitle", text["suptitle"])] + [
            (f"axes {i + 1} {key}", ax[key]) for i, ax in enumerate(text["axes"]) for key in ("title", "xlabel", "ylabel")]:
        if code_name(value):
            problems.append(f"{where} has a code name: {value!r}")
    legends = [(f"axes {i + 1}", ax["legend"]) for i, ax in enumerate(text["axes"])]
    for where, entries in legends + [("figure", text.get("legend", []))]:
        for entry in entries:
            if code_name(entry["label"]):
                problems.append(f"{where} legend entry has a code name: {entry['label']!r}")
            if not entry["drawn"]:
                problems.append(f"{where} legend entry draws nothing: {entry['label']!r}")
    seeds = text.get("seeds", 1)
    if seeds > 1 and not any(ax.get("intervals", 0) for ax in text["axes"]):
        problems.append(f"summarises {seeds} training seeds but draws no seed interval (bars or bands)")
    return problems


def _lay_out_again(fig: plt.Figure) -> None:
    """Fit titles, labels and legends to the figure's new size and fonts. A layout engine (``layout=
    "constrained"``) does so at every draw; a figure laid out once by ``tight_layout`` (which leaves a
    placeholder engine) or not at all keeps its screen-size spacing, where larger paper fonts on a smaller
    page make titles overlap, so it is laid out again here (``save_figure`` puts the screen positions back)."""
    if fig.get_layout_engine() is None or isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not compatible with tight_layout": kept as drawn
            fig.tight_layout()


def save_figure(fig: plt.Figure, name: str, profile: str, seeds: int = 1) -> Path:
    """Write figures/<profile>/<name>.png and .pdf at paper size and fonts, and <name>.json, the figure's
    text (``figure_text``, with ``seeds``: how many training seeds it summarises) that tests check; return
    the PNG's path relative to the project root (so printed paths are the same on every machine)."""
    folder = figure_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(figure_text(fig, seeds), indent=1, ensure_ascii=False) + "\n")
    screen_size = fig.get_size_inches().copy()
    roles = _text_roles(fig)
    screen_fonts = {t: t.get_fontsize() for t in roles}
    screen_positions = [(ax, ax.get_position(original=True)) for ax in fig.axes]
    try:
        fig.set_size_inches(*paper_size(fig), forward=False)
        for t, role in roles.items():
            t.set_fontsize(PAPER_FONT_SIZES[role])
        _lay_out_again(fig)
        fig.savefig(folder / f"{name}.png", dpi=PAPER_DPI, bbox_inches="tight", metadata=_PNG_METADATA)
        fig.savefig(folder / f"{name}.pdf", bbox_inches="tight", metadata=_PDF_METADATA)
    finally:
        fig.set_size_inches(*screen_size, forward=False)
        for t, size in screen_fonts.items():
            t.set_fontsize(size)
        for ax, position in screen_positions:
            ax.set_position(position)
    png = folder / f"{name}.png"
    try:
        return png.relative_to(project_root())
    except ValueError:
        return Path("figures") / profile / png.name


def accuracy_vs_cost(ax: plt.Axes, curves: dict[str, tuple[Sequence[float], Sequence[float]]],
                     reference: dict[str, tuple[float, float]] | None = None,
                     xlabel: str = "mean MACs / plain-backbone MACs") -> plt.Axes:
    """Accuracy (%) against cost for several methods; ``reference`` adds single labelled points."""
    for i, (label, (cost, acc)) in enumerate(curves.items()):
        order = sorted(range(len(cost)), key=lambda j: cost[j])
        ax.plot([cost[j] for j in order], [100 * acc[j] for j in order], ms=4, label=label, **method_style(label, i))
    for label, (cost, acc) in (reference or {}).items():
        ax.scatter([cost], [100 * acc], marker="*", s=140, zorder=5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(frameon=True)
    return ax


def exit_histogram(ax: plt.Axes, shares: dict[str, Sequence[float]], exit_labels: Sequence[str] | None = None,
                   errors: dict[str, Sequence[Sequence[float]] | None] | None = None,
                   colors: dict[str, object] | None = None) -> plt.Axes:
    """Share of samples (%) leaving at each exit, one bar group per method; exits numbered 1..K under an
    "exit" axis label (labels of their own with ``exit_labels``); ``errors``: per method, the distances from
    each bar to the ends of its interval, ``[below, above]`` (fractions, as the shares), drawn as error bars;
    ``colors``: per method (its ``method_style`` colour), else the colour cycle."""
    methods = list(shares)
    k = len(next(iter(shares.values())))
    labels = list(exit_labels or [str(i + 1) for i in range(k)])
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        yerr = [[100 * e for e in side] for side in errors[m]] if errors and errors.get(m) is not None else None
        ax.bar([i + (j - (len(methods) - 1) / 2) * width for i in range(k)], [100 * s for s in shares[m]],
               width=width, label=m, yerr=yerr, capsize=2 if yerr else 0, color=(colors or {}).get(m))
    ax.set_xticks(range(k), labels)
    ax.set_xlabel("exit")
    ax.set_ylabel("share of test images (%)")
    if len(methods) > 1:
        ax.legend(frameon=True)
    return ax


def stacked_exit_shares(ax: plt.Axes, labels: Sequence[str], shares: Sequence[Sequence[float]], title: str = "",
                        xlabel: str = "budget (fraction of backbone MACs)") -> plt.Axes:
    """One stacked bar per operating point (``labels``, e.g. budgets): the share of samples (%) leaving
    at each exit, exit 1 at the bottom, colours running from the first to the last exit."""
    k = len(shares[0])
    colors = plt.cm.viridis([j / max(1, k - 1) for j in range(k)])
    bottom = [0.0] * len(shares)
    for j in range(k):
        share = [100 * s[j] for s in shares]
        ax.bar(range(len(shares)), share, bottom=bottom, color=colors[j], label=f"exit {j + 1}")
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_xticks(range(len(shares)), list(labels), rotation=60)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return ax


def budget_calibration(ax: plt.Axes, budgets: Sequence[float], realised: dict[str, tuple[Sequence[float], Sequence[float]]],
                       tolerance: float = 0.1) -> plt.Axes:
    """Realised cost against the target budget for each method (``realised``: label -> (budgets, costs)),
    over the diagonal and the band of +-``tolerance`` of the budget."""
    lims = [min(budgets) * 0.85, max(budgets) * 1.1]
    ax.fill_between(lims, [(1 - tolerance) * v for v in lims], [(1 + tolerance) * v for v in lims], color="0.9",
                    label=f"±{100 * tolerance:.0f}% of budget")
    ax.plot(lims, lims, "k--", lw=1, label="realised cost = budget")
    for i, (label, (target, cost)) in enumerate(realised.items()):
        ax.plot(target, cost, ms=4, label=label, **method_style(label, i))
    ax.set_xlabel("target budget (fraction of backbone MACs)")
    ax.set_ylabel("realised test cost")
    ax.legend(frameon=True, loc="upper left", bbox_to_anchor=(1.01, 1))   # outside: it hides no data
    return ax


def fronts_with_bands(ax: plt.Axes, curves: dict[str, tuple[Sequence[float], Sequence[float]]],
                      bands: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                      bounds: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                      xlabel: str = "mean MACs / plain-network MACs",
                      bound_colors: dict[str, str] | None = None) -> plt.Axes:
    """Each method's front (``curves``: label -> (cost, accuracy), points joined by cost) over its 95%
    band (``bands``: label -> (costs, low, high)), and limits such as the oracle (``bounds``) as dashed
    lines, each in its own dash pattern and in ``bound_colors``' colour (the first in black, others grey by
    default). Accuracies are fractions; the axis shows %."""
    from matplotlib.patches import Patch
    for i, (label, (cost, acc)) in enumerate(curves.items()):
        style = method_style(label, i)
        order = sorted(range(len(cost)), key=lambda j: cost[j])
        ax.plot([cost[j] for j in order], [100 * acc[j] for j in order], lw=1.3, ms=3.5, label=label, **style)
        if label in bands:
            at, low, high = bands[label]
            ax.fill_between(at, [100 * v for v in low], [100 * v for v in high], color=style["color"], alpha=0.18,
                            lw=0)
    for i, (label, (cost, acc)) in enumerate((bounds or {}).items()):
        color = (bound_colors or {}).get(label, "k" if i == 0 else "0.55")
        ax.plot(cost, [100 * a for a in acc], color=color, lw=1.2 if i == 0 else 1.0,
                ls=("--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)))[i % 4], label=label)
    handles, labels = ax.get_legend_handles_labels()
    if bands:
        handles.append(Patch(color="0.5", alpha=0.3, lw=0))
        labels.append("95% bootstrap band over test images")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(handles, labels, frameon=True, loc="upper left", bbox_to_anchor=(1.01, 1))   # outside: hides no data
    return ax
