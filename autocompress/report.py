"""Review artifacts of a finished study: an interactive front plot, a per-layer heat map, Optuna's
own plots, one self-contained HTML report, and ``choose`` to pick a model by a rule.

Everything here is a plain function of an ``optuna.Study`` (with the ``baseline`` user attr that
a search stores), so it works on any study in any storage, long after the search. The HTML is
meant to be mailed around or opened from an artifact store: it loads nothing from the network
(hand-made SVG, inline CSS and a few lines of inline JS, the heat map as a data URI).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI
import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as optuna_plt
from matplotlib.colors import LogNorm, Normalize
from optuna.trial import FrozenTrial, TrialState

from autocompress import pareto
from autocompress.errors import AutocompressError, ConfigError
from autocompress.plan import FLOAT_BITS, pruned_percent

# Plot area of the front's SVG, in SVG user units (the SVG scales to the page's width).
_WIDTH, _HEIGHT = 760, 430
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 20, 56
_BLUE, _GREY, _RED = "#1f77b4", "#b8b8b8", "#d62728"
_HEATMAP_DPI = 120
_OBJECTIVES = (("accuracy", "validation accuracy"), ("size", "size (bytes)"))  # = trial values


# -- formatting ---------------------------------------------------------------------------------


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.2f} MiB"


def _bits(bits: int) -> str:
    if bits == FLOAT_BITS:
        return "fp32"
    return "fp16" if bits == 16 else f"{bits}b"


def _layer_lines(plan: dict[str, Any]) -> list[str]:
    """One line per layer: bits and sparsity, the two things a front member trades per layer."""
    lines = []
    for name, layer in plan.get("layers", {}).items():
        act = "" if layer["act_bits"] == FLOAT_BITS else f", inputs {layer['act_bits']} bits"
        lines.append(
            f"{name}: {_bits(layer['bits'])}, {pruned_percent(layer['prune'])} pruned{act}"
        )
    return lines


def _attr(text: str) -> str:
    """Escaped for an attribute value, newlines kept (the hover panel shows them)."""
    return html.escape(text, quote=True).replace("\n", "&#10;")


# -- the interactive front plot -----------------------------------------------------------------


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _size_ticks(lo: float, hi: float) -> list[tuple[int, str]]:
    """Powers of two in bytes (1, 2, 4 ... KiB read naturally), at most 8, with labels."""
    powers = list(range(math.ceil(math.log2(lo)), math.floor(math.log2(hi)) + 1))
    step = max(1, math.ceil(len(powers) / 8))
    units = ((20, "MiB"), (10, "KiB"), (0, "B"))
    ticks = []
    for power in powers[::step]:
        shift, unit = next((s, u) for s, u in units if power >= s)
        ticks.append((2**power, f"{2 ** (power - shift)} {unit}"))
    return ticks


def _accuracy_ticks(lo: float, hi: float) -> list[float]:
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if (hi - lo) / s <= 8)
    first = math.ceil(lo / step)
    return [k * step for k in range(first, math.floor(hi / step) + 1)]


def _star(cx: float, cy: float, r: float) -> str:
    corners = (
        f"{cx + radius * math.sin(k * math.pi / 5):.1f},"
        f"{cy - radius * math.cos(k * math.pi / 5):.1f}"
        for k, radius in enumerate([r, 0.4 * r] * 5)
    )
    return " ".join(corners)


def _front_svg(study: optuna.Study) -> str:
    """The front as an inline SVG: every marker carries its details in ``<title>`` (the
    browser's tooltip) and ``data-tip`` (the hover panel of ``_HOVER_JS``)."""
    baseline = study.user_attrs["baseline"]
    points = pareto.front(study)
    members = {p.trial for p in points}
    tests: dict[str, float] = study.user_attrs.get("test_accuracy", {})
    done = _complete(study)

    sizes = [float(t.values[1]) for t in done] + [float(baseline["float32_bytes"])]
    accs = [100 * t.values[0] for t in done] + [100 * baseline["val_accuracy"]]
    x_lo, x_hi = math.log10(min(sizes)), math.log10(max(sizes))
    x_pad = max(0.08 * (x_hi - x_lo), 0.05)
    x_lo, x_hi = x_lo - x_pad, x_hi + x_pad
    y_lo, y_hi = min(accs), max(accs)
    y_pad = max(0.06 * (y_hi - y_lo), 0.5)
    y_lo, y_hi = y_lo - y_pad, min(y_hi + y_pad, 100.5)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    bottom, right = _TOP + plot_h, _LEFT + plot_w

    def sx(size: float) -> float:
        return _LEFT + (math.log10(size) - x_lo) / (x_hi - x_lo) * plot_w

    def sy(acc_percent: float) -> float:
        return _TOP + (y_hi - acc_percent) / (y_hi - y_lo) * plot_h

    def tip(lines: list[str]) -> str:
        """The attribute and the child element that carry a marker's details."""
        text = "\n".join(lines)
        return f'data-tip="{_attr(text)}"><title>{html.escape(text)}</title>'

    def trial_tip(trial: FrozenTrial) -> str:
        acc, size = trial.values[:2]
        test = tests.get(str(trial.number))
        return tip(
            [
                f"trial {trial.number}" + (" (Pareto front)" if trial.number in members else ""),
                f"compression ratio {baseline['float32_bytes'] / size:.1f}x",
                f"val accuracy {acc:.2%}" + ("" if test is None else f", test {test:.2%}"),
                f"size {_size(size)} ({int(size):,} bytes)",
                *_layer_lines(trial.user_attrs.get("plan", {})),
            ]
        )

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="front-plot" viewBox="0 0 {_WIDTH} {_HEIGHT}"'
        ' role="img" aria-label="Pareto front: validation accuracy against compressed size">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fff"/>',
    ]
    for tick, label in _size_ticks(10**x_lo, 10**x_hi):
        x = sx(tick)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{bottom}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{label}</text>')
    for value in _accuracy_ticks(y_lo, y_hi):
        y = sy(value)
        out.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>')
    out += [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none"'
        ' stroke="#999"/>',
        f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 12}" text-anchor="middle">'
        "compressed size (log scale)</text>",
        f'<text transform="translate(16 {_TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        "validation accuracy (%)</text>",
    ]
    for trial in done:  # grey first, so the front is drawn on top
        if trial.number not in members:
            x, y = sx(trial.values[1]), sy(100 * trial.values[0])
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{_GREY}" {trial_tip(trial)}'
                "</circle>"
            )
    if points:
        xs = [sx(p.size_bytes) for p in points]
        ys = [sy(100 * p.val_accuracy) for p in points]
        steps = "".join(f" H{x:.1f} V{y:.1f}" for x, y in zip(xs[1:], ys[1:], strict=True))
        out.append(
            f'<path d="M{xs[0]:.1f} {ys[0]:.1f}{steps}" fill="none" stroke="{_BLUE}"'
            ' stroke-width="2"/>'
        )
    by_number = {t.number: t for t in done}
    for p in points:
        x, y = sx(p.size_bytes), sy(100 * p.val_accuracy)
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{_BLUE}" stroke="#fff" '
            f'data-trial="{p.trial}" {trial_tip(by_number[p.trial])}</circle>'
        )
        out.append(f'<text class="label" x="{x + 7:.1f}" y="{y - 8:.1f}">#{p.trial}</text>')

    size = baseline["float32_bytes"]
    star = _star(sx(size), sy(100 * baseline["val_accuracy"]), 10)
    baseline_tip = tip(
        [
            f"float32 baseline ({baseline.get('source', '?')})",
            "compression ratio 1.0x",
            f"val accuracy {baseline['val_accuracy']:.2%}",
            f"size {_size(size)} ({int(size):,} bytes)",
        ]
    )
    out.append(f'<polygon points="{star}" fill="{_RED}" {baseline_tip}</polygon>')

    lx, ly = right - 130, bottom - 58
    out += [
        f'<circle cx="{lx}" cy="{ly}" r="4" fill="{_GREY}"/>',
        f'<text x="{lx + 12}" y="{ly + 4}">trial</text>',
        f'<circle cx="{lx}" cy="{ly + 18}" r="6" fill="{_BLUE}"/>',
        f'<text x="{lx + 12}" y="{ly + 22}">Pareto front</text>',
        f'<polygon points="{_star(lx, ly + 36, 8)}" fill="{_RED}"/>',
        f'<text x="{lx + 12}" y="{ly + 40}">float32 baseline</text>',
        "</svg>",
    ]
    return "\n".join(out)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
#front-plot { width: 100%; max-width: 900px; height: auto; font-size: 12px; }
#front-plot .grid { stroke: #e4e4e4; }
#front-plot .label { fill: #1f4f7a; font-size: 11px; }
#front-plot [data-tip]:hover { stroke: #000; stroke-width: 2; cursor: pointer; }
#front-info { white-space: pre-line; font-family: monospace; background: #f5f5f5;
  border: 1px solid #ddd; padding: 8px; max-width: 884px; min-height: 7em; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td.layers { text-align: left; font-family: monospace; }
pre { background: #f5f5f5; border: 1px solid #ddd; padding: 8px; overflow-x: auto; }
img { max-width: 100%; }
"""

# A few lines, so hovering shows a point's details without waiting for the native tooltip.
_HOVER_JS = """
(function () {
  var box = document.getElementById("front-info");
  document.querySelectorAll("#front-plot [data-tip]").forEach(function (el) {
    el.addEventListener("mouseenter", function () { box.textContent = el.dataset.tip; });
  });
})();
"""


def _front_block(study: optuna.Study) -> str:
    return (
        f"{_front_svg(study)}\n"
        '<div id="front-info">Hover a point for its details.</div>\n'
        f"<script>{_HOVER_JS}</script>"
    )


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def front_html(study: optuna.Study) -> str:
    """The front plot alone as a self-contained HTML document (log size against accuracy)."""
    title = f"Pareto front of {study.study_name}"
    return _document(title, f"<h1>{html.escape(title)}</h1>\n{_front_block(study)}")


# -- the per-layer heat map ---------------------------------------------------------------------


def _layer_grid(
    points: list[pareto.ParetoPoint],
) -> tuple[list[str], list[list[float]], list[list[float]]]:
    """Layer names, and per front member (rows) and layer (columns): bits and kept fraction.

    A layer missing from a member's plan (a plan of another space) is NaN, drawn blank.
    """
    layers: list[str] = []
    for p in points:
        layers += [name for name in p.plan.get("layers", {}) if name not in layers]
    bits, kept = [], []
    for p in points:
        plans = p.plan.get("layers", {})
        bits.append([float(plans[n]["bits"]) if n in plans else math.nan for n in layers])
        kept.append([1 - plans[n]["prune"] if n in plans else math.nan for n in layers])
    return layers, bits, kept


def _heatmap_figsize(rows: int, columns: int) -> tuple[float, float]:
    """Inches: wide enough for two panels of labelled columns, one strip per front member."""
    return max(7.0, 3.2 + 1.4 * columns), 1.5 + 0.42 * rows


def _heatmap_png(study: optuna.Study) -> bytes:
    points = pareto.front(study)
    if not points:
        raise AutocompressError("report: the study has no complete trial, so no front to draw")
    layers, bits, kept = _layer_grid(points)
    fig, (ax_bits, ax_kept) = plt.subplots(
        1,
        2,
        figsize=_heatmap_figsize(len(points), len(layers)),
        dpi=_HEATMAP_DPI,
        layout="constrained",
        sharey=True,
    )
    # Bits on a log2 colour scale: 2, 4, 8, 16 and 32 (float) are evenly spaced.
    panels = [
        (ax_bits, bits, "weight bits", "viridis", LogNorm(vmin=1, vmax=FLOAT_BITS)),
        (ax_kept, kept, "kept fraction of weights", "Greens", Normalize(vmin=0, vmax=1)),
    ]
    for ax, grid, title, cmap, norm in panels:
        image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                if math.isnan(value):
                    continue
                red, green, blue, _ = image.cmap(norm(value))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(
                    c,
                    r,
                    _bits(int(value)) if grid is bits else f"{value:.0%}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if dark else "black",
                )
        ax.set_title(title)
        rotate = len(layers) > 4 or max((len(n) for n in layers), default=0) > 6
        ax.set_xticks(
            range(len(layers)),
            layers,
            rotation=45 if rotate else 0,
            ha="right" if rotate else "center",
        )
    ax_bits.set_yticks(
        range(len(points)),
        [f"trial {p.trial}  {_size(p.size_bytes)}  {p.ratio:.1f}x" for p in points],
    )
    fig.suptitle(f"{study.study_name}: front members, smallest first")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def layer_heatmap(study: optuna.Study, path: Path) -> None:
    """PNG of what each front member (rows, smallest first) does to each layer (columns): its
    weight bits and the fraction of weights it keeps; shows where the search finds slack."""
    path.write_bytes(_heatmap_png(study))


# -- Optuna's own plots -------------------------------------------------------------------------


def _importances_possible(done: list[FrozenTrial]) -> bool:
    """fANOVA needs two complete trials that differ in a parameter; Optuna 5 does not refuse
    fewer, it draws meaningless equal bars."""
    if len(done) < 2:
        return False
    names = set.intersection(*(set(t.params) for t in done))
    return any(len({t.params[n] for t in done}) > 1 for n in names)


def _objective(i: int) -> Callable[[FrozenTrial], float]:
    return lambda trial: float(trial.values[i])


def _save(ax: Any, path: Path) -> Path:
    ax.figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    return path


def optuna_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Parameter importances and optimization history, one PNG per objective; returns the
    files written. Plots that the study cannot support yet are skipped, never an error: a
    search must not fail because of a picture."""
    done = _complete(study)
    if not done:
        return []
    written = []
    # Optuna's plots switch the global style to ggplot; rc_context keeps that to them.
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i, (key, name) in enumerate(_OBJECTIVES):
            if _importances_possible(done):
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # same bars
                try:
                    ax = optuna_plt.plot_param_importances(
                        study, evaluator, target=_objective(i), target_name=name
                    )
                except RuntimeError:  # fANOVA: "zero total variance" (all values equal)
                    pass
                else:
                    written.append(_save(ax, out_dir / f"importance-{key}.png"))
            ax = optuna_plt.plot_optimization_history(study, target=_objective(i), target_name=name)
            written.append(_save(ax, out_dir / f"history-{key}.png"))
    return written


# -- the report ---------------------------------------------------------------------------------


def _front_table(points: list[pareto.ParetoPoint]) -> str:
    rows = [
        "<table>",
        "<tr><th>trial</th><th>val acc</th><th>test acc</th><th>size</th><th>bytes</th>"
        "<th>ratio</th><th>layers (bits / pruned)</th></tr>",
    ]
    for p in points:
        test = "-" if p.test_accuracy is None else f"{p.test_accuracy:.2%}"
        rows.append(
            f"<tr><td>{p.trial}</td><td>{p.val_accuracy:.2%}</td><td>{test}</td>"
            f"<td>{_size(p.size_bytes)}</td><td>{p.size_bytes:,}</td><td>{p.ratio:.1f}x</td>"
            f'<td class="layers">{html.escape(p.summary)}</td></tr>'
        )
    rows.append("</table>")
    return "\n".join(rows)


def _json_block(value: Any) -> str:
    return f"<pre>{html.escape(json.dumps(value, indent=2, default=str))}</pre>"


def report_html(study: optuna.Study) -> str:
    """One self-contained HTML file to review a study: baseline, front table, interactive front
    plot, per-layer heat map and the config that ran; no external resources at all."""
    baseline = study.user_attrs["baseline"]
    points = pareto.front(study)
    counts = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    title = f"autocompress report: {study.study_name}"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{counts[TrialState.COMPLETE]} complete trials, {counts[TrialState.PRUNED]} stopped "
        f"early, {counts[TrialState.FAIL]} failed; {len(points)} on the Pareto front.</p>",
        "<h2>Baseline</h2>",
        f"<p>val accuracy {baseline['val_accuracy']:.2%}, float32 size "
        f"{_size(baseline['float32_bytes'])} ({int(baseline['float32_bytes']):,} bytes), "
        f"{html.escape(str(baseline.get('source', '?')))}.</p>",
        "<h2>Pareto front</h2>",
        "<p>Ratio = the baseline's float32 size / the model's size. Test accuracy is measured "
        "after the search, for front members only.</p>",
        _front_table(points),
        "<h2>Size against accuracy</h2>",
        _front_block(study),
    ]
    if points:
        png = base64.b64encode(_heatmap_png(study)).decode("ascii")
        parts += [
            "<h2>Per-layer plan of the front</h2>",
            f'<img alt="weight bits and kept fraction per layer of each front member" '
            f'src="data:image/png;base64,{png}"/>',
        ]
    parts += ["<h2>Config</h2>", _json_block(study.user_attrs.get("config", {}))]
    space = study.user_attrs.get("identity", {}).get("space")
    if space is not None:
        parts += ["<h2>Search space</h2>", _json_block(space)]
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent is not None:
        parts.append(f"<p>MLflow parent run: <code>{html.escape(str(parent))}</code></p>")
    return _document(title, "\n".join(parts))


# -- choosing a model ---------------------------------------------------------------------------

_RULES = (
    "use 'smallest within P', 'best ratio within P' (P: accuracy points below the baseline, "
    "e.g. 0.5) or 'most accurate below SIZE' (bytes, or with a B, KB, KiB, MB or MiB suffix)"
)
_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_WITHIN = re.compile(rf"(smallest|best ratio) within {_NUMBER}(?: ?(?:points|pts|pt|%))?")
_BELOW = re.compile(rf"most accurate below {_NUMBER} ?([a-z]*)")
_EPSILON = 1e-9  # accuracies are float32 fractions: "within 0.5" must include exactly 0.5


def choose(study: optuna.Study, rule: str) -> int:
    """The trial number of the front member a rule picks, so a script or the CLI can say which
    model to ship without reading the table. "smallest within P" and "best ratio within P" pick
    the same member (ratio = baseline size / size); both read naturally, so both are accepted."""
    text = " ".join(rule.lower().split())
    points = pareto.front(study)  # smallest first
    within, below = _WITHIN.fullmatch(text), _BELOW.fullmatch(text)
    if within is not None:
        floor = study.user_attrs["baseline"]["val_accuracy"] - float(within.group(2)) / 100
        fits = [p for p in points if p.val_accuracy >= floor - _EPSILON]
        best = max(fits, key=lambda p: p.ratio, default=None)
    elif below is not None and below.group(2) in _UNITS:
        limit = float(below.group(1)) * _UNITS[below.group(2)]
        fits = [p for p in points if p.size_bytes < limit]
        best = max(fits, key=lambda p: p.val_accuracy, default=None)  # first max: smallest
    else:
        raise ConfigError("rule", f"{rule!r} is not a rule; {_RULES}")
    if best is None:
        raise ConfigError("rule", f"no front member satisfies {rule!r} ({_span(study, points)})")
    return best.trial


def _span(study: optuna.Study, points: list[pareto.ParetoPoint]) -> str:
    """What the front offers, so a user can fix a rule that nothing satisfies."""
    if not points:
        return "the front is empty"
    accuracies = [p.val_accuracy for p in points]
    return (
        f"{len(points)} members from {_size(points[0].size_bytes)} to "
        f"{_size(points[-1].size_bytes)}, val accuracy {min(accuracies):.2%} to "
        f"{max(accuracies):.2%}; baseline {study.user_attrs['baseline']['val_accuracy']:.2%}"
    )
