"""The review artifacts (report.py) on a real small study, and on hand-made ones for the edges."""

from __future__ import annotations

import base64
import math
import re
import struct
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import matplotlib
import optuna
import pytest
from optuna.distributions import IntDistribution

from autocompress import pareto, report
from autocompress.config import build_config
from autocompress.errors import ConfigError
from autocompress.plan import pruned_percent
from autocompress.study import run_search

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_NAMESPACE = 'xmlns="http://www.w3.org/2000/svg"'


def make_study(tmp: Path) -> optuna.Study:
    """A real search: 6 trials on digits with a short baseline training (~20 s)."""
    out = tmp / "out"
    settings = {"out": str(out), "trials": 6, "teacher": {"epochs": 8}, "early_stop_drop": 1.0}
    run_search(build_config(None, settings), progress=False, echo=lambda _: None)
    return optuna.load_study(study_name="mlp-digits-default", storage=f"sqlite:///{out}/optuna.db")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    return make_study(tmp_path_factory.mktemp("report"))


def hand_made(name: str, trials: int, layer: str = "fc1", summary: str = "") -> optuna.Study:
    """An in-memory study shaped like a search's, each trial more accurate and larger."""
    study = optuna.create_study(study_name=name, directions=["maximize", "minimize"])
    study.set_user_attr("baseline", {"val_accuracy": 0.95, "float32_bytes": 200_000, "source": "x"})
    for i in range(trials):
        plan = {"layers": {layer: {"bits": 2 + i, "prune": 0.5, "act_bits": 32}}}
        study.add_trial(
            optuna.trial.create_trial(
                values=[0.9 + 0.01 * i, 10_000.0 * (i + 1)],
                params={f"bits/{layer}": 2 + i},
                distributions={f"bits/{layer}": IntDistribution(1, 16)},
                user_attrs={"plan": plan, "summary": summary},
            )
        )
    return study


class Document(HTMLParser):
    """Every tag with its attributes, the text, and whether the tags nest properly."""

    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.mismatched: list[str] = []
        self.data: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.mismatched.append(tag)

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def attrs(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def check_self_contained(text: str) -> Document:
    document = Document(text)
    assert document.open == [] and document.mismatched == []
    assert 'src="http' not in text and 'href="http' not in text and "<script src" not in text
    assert "http" not in text.replace(SVG_NAMESPACE, "")  # no URL at all, CSS included
    assert not document.attrs("link")
    for _, attrs in document.tags:
        for key in ("src", "href"):
            assert attrs.get(key) is None or str(attrs[key]).startswith("data:")
    return document


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def assert_heatmap_shape(data: bytes, points: list[pareto.ParetoPoint]) -> None:
    """One strip per front member: the image's size is the figure's for that many rows."""
    layers = {name for p in points for name in p.plan["layers"]}
    width, height = report._heatmap_figsize(len(points), len(layers))
    got = png_size(data)  # matplotlib may truncate a fractional pixel where round() rounds up
    assert abs(got[0] - width * 120) < 1 and abs(got[1] - height * 120) < 1, got


def test_front_html_shows_every_trial_with_the_front_highlighted(study: optuna.Study) -> None:
    points = pareto.front(study)
    document = check_self_contained(report.front_html(study))
    circles = document.attrs("circle")
    members = [c for c in circles if "data-trial" in c]
    assert sorted(int(str(c["data-trial"])) for c in members) == sorted(p.trial for p in points)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    grey = [c for c in circles if "data-tip" in c and "data-trial" not in c]
    assert len(grey) == len(complete) - len(points)
    tips = {str(c["data-trial"]): str(c["data-tip"]) for c in members}
    for p in points:
        tip = tips[str(p.trial)]
        assert f"trial {p.trial} (Pareto front)" in tip
        assert f"compression ratio {p.ratio:.1f}x" in tip
        assert f"val accuracy {p.val_accuracy:.2%}" in tip
        for name, layer in p.plan["layers"].items():
            assert f"{name}: {layer['bits']}b, {pruned_percent(layer['prune'])} pruned" in tip
    baseline = document.attrs("polygon")[0]
    assert str(baseline["data-tip"]).startswith("float32 baseline")
    assert len(document.attrs("path")) == 1  # the staircase
    assert len(document.attrs("script")) == 1


def test_report_html_holds_table_plot_heatmap_and_config(study: optuna.Study) -> None:
    points = pareto.front(study)
    text = report.report_html(study)
    document = check_self_contained(text)
    cells = [d.strip() for d in document.data]
    for p in points:
        assert str(p.trial) in cells and f"{p.ratio:.1f}x" in cells and p.summary in cells
        if p.test_accuracy is not None:
            assert f"{p.test_accuracy:.2%}" in cells
    assert len(document.attrs("tr")) == len(points) + 1
    assert len([c for c in document.attrs("circle") if "data-trial" in c]) == len(points)
    (image,) = document.attrs("img")
    source = str(image["src"])
    assert source.startswith("data:image/png;base64,")
    assert_heatmap_shape(base64.b64decode(source.split(",", 1)[1]), points)
    baseline = study.user_attrs["baseline"]
    assert f"val accuracy {baseline['val_accuracy']:.2%}" in text
    shown = "".join(document.data)  # the config that ran, as the reader sees it
    assert '"model": "mlp"' in shown and '"trials": 6' in shown


def test_layer_heatmap_has_one_row_per_front_member(study: optuna.Study, tmp_path: Path) -> None:
    points = pareto.front(study)
    path = tmp_path / "layers.png"
    report.layer_heatmap(study, path)
    assert_heatmap_shape(path.read_bytes(), points)
    layers, bits, kept = report._layer_grid(points)
    assert layers == list(points[0].plan["layers"])
    assert [len(row) for row in bits] == [len(layers)] * len(points)
    for p, bit_row, kept_row in zip(points, bits, kept, strict=True):
        assert bit_row == [p.plan["layers"][n]["bits"] for n in layers]
        assert kept_row == pytest.approx([1 - p.plan["layers"][n]["prune"] for n in layers])


def test_optuna_plots_are_written_and_leave_the_style_alone(
    study: optuna.Study, tmp_path: Path
) -> None:
    before = dict(matplotlib.rcParams)
    paths = report.optuna_plots(study, tmp_path)
    assert sorted(p.name for p in paths) == [
        "history-accuracy.png",
        "history-size.png",
        "importance-accuracy.png",
        "importance-size.png",
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert dict(matplotlib.rcParams) == before  # Optuna's ggplot style did not leak


def test_optuna_plots_skip_what_a_tiny_study_cannot_show(tmp_path: Path) -> None:
    assert report.optuna_plots(hand_made("empty", 0), tmp_path) == []
    paths = report.optuna_plots(hand_made("one", 1), tmp_path)
    assert sorted(p.name for p in paths) == ["history-accuracy.png", "history-size.png"]


def test_choose_follows_each_rule_form(study: optuna.Study) -> None:
    points = pareto.front(study)
    base = 100 * study.user_attrs["baseline"]["val_accuracy"]

    def drop(p: pareto.ParetoPoint) -> float:
        return base - 100 * p.val_accuracy  # accuracy points below the baseline

    for points_allowed in (0.5, 1.0, 100.0):
        fits = [p for p in points if drop(p) <= points_allowed + 1e-6]
        for rule in (
            f"smallest within {points_allowed:g}",
            f"best ratio within {points_allowed:g}",
        ):
            if not fits:
                with pytest.raises(ConfigError, match=r"^rule: no front member"):
                    report.choose(study, rule)
                continue
            assert report.choose(study, rule) == min(fits, key=lambda p: p.size_bytes).trial
    assert report.choose(study, "Smallest  WITHIN 100 pts") == points[0].trial

    largest = points[-1].size_bytes
    limits = {
        f"most accurate below {largest}": largest,
        f"most accurate below {largest + 1}": largest + 1,
        f"most accurate below {math.ceil(largest / 1000)}KB": 1000 * math.ceil(largest / 1000),
        f"most accurate below {largest / 1024:.3f} KiB": 1024 * float(f"{largest / 1024:.3f}"),
        "most accurate below 1MB": 10**6,
        "most accurate below 0.5 MiB": 2**19,
    }
    for rule, limit in limits.items():
        fits = [p for p in points if p.size_bytes < limit]
        if not fits:
            with pytest.raises(ConfigError, match=r"^rule: no front member"):
                report.choose(study, rule)
            continue
        best = max(p.val_accuracy for p in fits)
        expected = min((p for p in fits if p.val_accuracy == best), key=lambda p: p.size_bytes)
        assert report.choose(study, rule) == expected.trial, rule


@pytest.mark.parametrize(
    "rule",
    [
        "",
        "smallest",
        "smallest within",
        "smallest within -1",
        "largest within 1",
        "most accurate below 50 parsecs",
        "most accurate above 50KB",
        "smallest within 0.5\nand then some",
    ],
)
def test_choose_refuses_a_bad_rule_in_one_line(study: optuna.Study, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        report.choose(study, rule)
    message = str(caught.value)
    assert message.startswith("rule: ") and "\n" not in message
    assert "smallest within P" in message and "most accurate below SIZE" in message


def test_choose_names_a_rule_nothing_satisfies(study: optuna.Study) -> None:
    with pytest.raises(ConfigError) as caught:
        report.choose(study, "most accurate below 10B")
    message = str(caught.value)
    assert re.fullmatch(r"rule: no front member satisfies 'most accurate below 10B' .*", message)


def test_html_escapes_what_comes_from_the_study() -> None:
    evil = "<script>alert(1)</script>"
    study = hand_made('<b>"study" & co</b>', 3, layer=evil, summary=evil)
    for text in (report.front_html(study), report.report_html(study)):
        check_self_contained(text)
        assert evil not in text and "<b>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "&lt;b&gt;&quot;study&quot; &amp; co&lt;/b&gt;" in text


def test_report_of_a_study_without_complete_trials_has_no_heatmap() -> None:
    document = check_self_contained(report.report_html(hand_made("empty", 0)))
    assert not document.attrs("img") and len(document.attrs("polygon")) == 2  # baseline, legend


def test_front_plot_data_tip_keeps_lines(study: optuna.Study) -> None:
    text = report.front_html(study)
    tip: Any = Document(text).attrs("polygon")[0]["data-tip"]
    assert "\n" in tip and "&#10;" in text  # one fact per line in the hover panel
