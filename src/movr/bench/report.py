"""`movr bench report`: every experiment's results under a run directory, on one static HTML page.

It finds the result JSON files the runner wrote, keeps those whose `benchmark` names an experiment of the
registry, and asks that experiment how to show it (`headline`, `report`, `figures`). The page opens with
what the results say and the articles' claims beside them, then gives every result its section: what was
run (law 7), the experiment's tables (measured / floor: law 3), its checks and its plots (the PNG beside
the JSON, or drawn again from it). One file, no script and no external URL: it can be mailed or archived.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from movr.bench.experiment import HELD_AWAKE, Experiment, Figure, console
from movr.bench.markup import checks_list, esc, table
from movr.bench.registry import Registry, registry
from movr.cli_support import CliError

SKIP_DIRS = {"servers", "logs", "data"}  # PostgreSQL data and logs: never results, and often large
MAX_JSON_BYTES = 512 * 2**20
# What a section body, a headline or a figure may raise on a result of an older or partial shape: the page
# says so in its place and shows the rest.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError)

# The articles' measurable claims, as /work/shared/reference/README.md states them (texts copied verbatim):
# (claim, article, our experiment, the experiments whose results speak to it).
CLAIMS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "journey from Rome (sign up, log in, view vehicles, add vehicle, start ride, end ride, view rides, "
        'log out): ~150 ms average SQL latency single-region, < 2.5 ms multi-region, "over 60x"',
        "000",
        "movr bench journey",
        ("journey",),
    ),
    (
        'higher throughput, hybrid deployments (multi-region app, single-region database) "not explored"',
        "000",
        "movr bench journey (hybrid), movr bench throughput",
        ("journey", "throughput"),
    ),
    (
        "default REGIONAL BY ROW keeps local read/update latency via locality-optimized search; only slightly "
        "slower than manual partitioning; rehoming best when uncontended",
        "003",
        "movr bench ycsb",
        ("ycsb",),
    ),
    (
        "inserts: default REGIONAL BY ROW > 100 ms (uniqueness checked in all regions) vs tens of ms with a "
        "computed region",
        "003",
        "movr bench insert",
        ("insert",),
    ),
    (
        "auto-rehoming under contention (c = 1, 2, 3 contending regions, 50 % locality) loses its value as "
        "contention rises",
        "003",
        "movr bench rehome",
        ("rehome",),
    ),
    (
        "region survival: reads local, writes cost at least the RTT to the nearest other region; leases for "
        "a lost region move in < 10 s",
        "004",
        "movr bench failover, survival write latency",
        ("failover",),
    ),
    ("data domiciling: EU rows only on EU nodes with super regions", "004", "domicile audit", ()),
)
ARTICLES = {
    "000": "the MovR tutorial (000_fd183b4ea4813171.txt)",
    "003": "REGIONAL BY ROW (003_172a48c681fde038.txt)",
    "004": "region-level survival (004_2faa11663c964a6e.txt)",
}


@dataclass(frozen=True)
class Found:
    """A result file, the experiment that made it, and its anchor on the page."""

    experiment: Experiment
    path: Path
    data: dict[str, Any]
    anchor: str = ""

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def checks(self) -> list[Mapping[str, Any]]:
        checks = self.data.get("checks")
        return checks if isinstance(checks, list) else []


def find_results(run_dir: Path, experiments: Registry) -> tuple[list[Found], list[tuple[Path, str]]]:
    """The results of registered experiments under `run_dir`, in the registry's order; and the results of
    experiments it does not know (path, name), which the page lists without showing."""
    order = list(experiments.experiments)
    found, unknown = [], []
    for path in _json_files(run_dir):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = data.get("benchmark") if isinstance(data, dict) else None
        if not isinstance(name, str):
            continue  # not a result: a lab's state, link specs, a configuration
        if name in experiments.experiments:
            found.append(Found(experiments.experiments[name], path, data))
        else:
            unknown.append((path, name))
    found.sort(key=lambda f: (order.index(f.name), str(f.path)))
    return [Found(f.experiment, f.path, f.data, f"{f.name}-{i}") for i, f in enumerate(found)], unknown


def _json_files(run_dir: Path) -> list[Path]:
    paths = []
    for root, dirs, files in os.walk(run_dir, onerror=lambda _error: None):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            try:
                if name.endswith(".json") and path.stat().st_size <= MAX_JSON_BYTES:
                    paths.append(path)
            except OSError:
                continue
    return paths


def _headline(result: Found) -> list[str]:
    held = [f"CPUs held awake for the run ({HELD_AWAKE})"] if _held_awake(result.data) else []
    try:
        return [*result.experiment.headline(result.data), *held]
    except SHAPE_ERRORS:
        return ["(this result's shape is not one its experiment reads)", *held]


def _held_awake(data: Mapping[str, Any]) -> bool:
    """Whether the run held the CPUs awake (`--hold-cpus-awake`): its latencies read against no wake-ups."""
    machine = data.get("machine")
    return isinstance(machine, dict) and machine.get("cpus_held_awake") is True


def _tally(checks: Sequence[Mapping[str, Any]]) -> str:
    held = sum(1 for c in checks if c.get("holds") is True)
    failed = sum(1 for c in checks if c.get("holds") is False)
    unjudged = len(checks) - held - failed
    parts = [f"<span class=ok>{held} hold</span>"] if held else []
    parts += [f"<span class=bad>{failed} do not</span>"] if failed else []
    parts += [f"<span class=muted>{unjudged} not judged</span>"] if unjudged else []
    return ", ".join(parts)


def findings(results: Sequence[Found]) -> str:
    """Per result: its headline lines and its checks, failed ones first."""
    items = []
    for result in results:
        checks = sorted(result.checks, key=lambda c: {False: 0, True: 1}.get(c.get("holds"), 2))
        lines = "".join(f"<li>{esc(line)}</li>" for line in _headline(result))
        tally = f" — checks: {_tally(checks)}" if checks else ""
        items.append(
            f"<li><a href='#{result.anchor}'>{esc(result.name)}</a> {_scope(result.data)}{tally}"
            f"<ul>{lines}</ul>{checks_list(checks)}</li>"
        )
    return f"<ul class=findings>{''.join(items)}</ul>"


def claims_table(results: Sequence[Found]) -> str:
    rows = []
    for claim in CLAIMS:
        ours = []
        for result in results:
            if result.name not in claim[3]:
                continue
            said = "; ".join(_headline(result))
            tally = f" (checks: {_tally(result.checks)})" if result.checks else ""
            ours.append(
                f"<div><a href='#{result.anchor}'>{esc(result.name)}</a> {_scope(result.data)}: "
                f"{esc(said) or '<span class=muted>no headline</span>'}{tally}</div>"
            )
        rows.append(
            [
                esc(claim[0]),
                f"<span title='{esc(ARTICLES[claim[1]])}'>{esc(claim[1])}</span>",
                f"<code>{esc(claim[2])}</code>",
                "".join(ours) or "<span class=muted>no result in this run directory</span>",
            ]
        )
    return table(("the articles' claim", "article", "our experiment", "these runs"), rows, numeric_from=99)


def _scope(data: Mapping[str, Any]) -> str:
    scale = data.get("scale")
    return f"<span class=muted>(preset {esc(data.get('preset') or '–')}, delays ×{esc(_scale(scale))})</span>"


def _scale(scale: Any) -> str:
    return "–" if scale is None else f"{scale:g}" if isinstance(scale, int | float) else str(scale)


def _png(figure: Figure, result: Found) -> tuple[bytes | None, str]:
    """The PNG the runner wrote beside the JSON, else drawn again from the JSON; and where it came from, or
    why it could not be drawn."""
    beside = figure.path_beside(result.path)
    if beside.is_file():
        return beside.read_bytes(), "beside the JSON"
    with tempfile.TemporaryDirectory(prefix="movr-report-") as tmp:
        target = Path(tmp) / "plot.png"
        try:
            figure.draw(result.data, target)
            return target.read_bytes(), "drawn from the JSON"
        except Exception as error:  # an older or partial result: say so on the page, keep the rest
            return None, f"{type(error).__name__}: {error}"


def _meta(result: Found, run_dir: Path) -> str:
    data = result.data
    try:
        where = result.path.relative_to(run_dir)
    except ValueError:
        where = result.path
    items = [
        f"file <code>{esc(where)}</code>",
        f"preset <b>{esc(data.get('preset') or '–')}</b>",
        f"delays ×<b>{esc(_scale(data.get('scale')))}</b>",
        "versions " + esc(", ".join(f"{k} {v}" for k, v in (data.get("versions") or {}).items() if v)),
        "machine "
        + esc(
            ", ".join(
                f"{k} {v}" for k, v in (data.get("machine") or {}).items() if v and not isinstance(v, dict | list)
            )
        ),
    ]
    if data.get("started_at"):
        items.append(f"started {esc(data['started_at'])}")
    return "<p class=meta>" + " · ".join(items) + "</p>"


def section(result: Found, run_dir: Path) -> tuple[str, int]:
    """A result's section, and how many plots it embeds."""
    parts = [f"<h2 id='{result.anchor}'>{esc(result.name)}</h2>", _meta(result, run_dir)]
    scale = result.data.get("scale")
    if isinstance(scale, int | float) and scale != 1:
        parts.append(
            f"<p class=warn>Delays scaled ×{esc(_scale(scale))}: milliseconds here are not comparable with the "
            "articles' figures; ratios and counts are.</p>"
        )
    if _held_awake(result.data):
        parts.append(
            f"<p class=warn>CPUs held awake for the run ({esc(HELD_AWAKE)}): no CPU slept, so no request paid "
            "for waking one: compare its latencies only with runs that held them too.</p>"
        )
    try:
        parts += result.experiment.report(result.data)
    except SHAPE_ERRORS as error:
        parts.append(f"<p class=bad>could not read this result's tables: {esc(type(error).__name__)} {esc(error)}</p>")
    if result.checks:
        parts += ["<h4>Checks</h4>", checks_list(result.checks)]
    try:
        plots = [(figure.title, *_png(figure, result)) for figure in result.experiment.figures(result.data)]
    except SHAPE_ERRORS as error:
        plots = [("figures", None, f"{type(error).__name__}: {error}")]
    embedded = 0
    for title, png, origin in plots:
        if png is None:
            parts.append(f"<p class=bad>plot “{esc(title)}” could not be drawn: {esc(origin)}</p>")
            continue
        embedded += 1
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure><img alt='{esc(result.name)}: {esc(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{esc(title)} <span class=muted>({esc(origin)})</span></figcaption></figure>"
        )
    return "\n".join(parts), embedded


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 1em 2em 4em; color: #1b1f24; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2em;
       margin-top: 2.2em; } h4 { margin: 1.4em 0 .4em; } h5 { margin: 1em 0 .3em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; vertical-align: top; }
th { background: #f3f5f8; text-align: left; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
.muted { color: #6a737d; } .ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
.meta { color: #57606a; font-size: 12.5px; } .warn { background: #fff8c5; padding: .3em .6em; border-radius: 4px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 12.5px; } ul.checks li { margin: .2em 0; }
ul.findings > li { margin: .6em 0; } code { background: #f3f5f8; padding: 0 .25em; border-radius: 3px; }
"""


def render(results: Sequence[Found], run_dir: Path, unknown: Sequence[tuple[Path, str]] = ()) -> tuple[str, int]:
    """The page, and how many plots it embeds."""
    sections, embedded = [], 0
    for result in results:
        body, plots = section(result, run_dir)
        sections.append(f"<section>{body}</section>")
        embedded += plots
    skipped = "".join(
        f"<li><code>{esc(path)}</code>: <code>{esc(name)}</code> is not an experiment of this movr</li>"
        for path, name in unknown
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MovR Global — benchmark report</title>
<style>{CSS}</style></head>
<body>
<h1>MovR Global — benchmark report</h1>
<p class=meta>{len(results)} results found under <code>{esc(run_dir)}</code>; page made
{esc(time.strftime("%Y-%m-%d %H:%M:%S %z"))}. Every latency is set beside its physical floor (÷ floor = measured /
floor); every result states its preset and delay scale.</p>
<h2 id="findings">What these runs say</h2>
{findings(results)}
{f"<p class=muted>Not shown:</p><ul class=muted>{skipped}</ul>" if skipped else ""}
<h2 id="claims">The articles' claims beside these runs</h2>
{claims_table(results)}
{"".join(sections)}
</body></html>
"""
    return page, embedded


@click.command("report")
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=lambda: Path.cwd() / "run" / "bench",
    help="Where to look for result JSON files [./run/bench].",
)
# Not click's dir_okay=False: a directory given as --output is refused below, in one line like every bad input.
@click.option("--output", type=click.Path(path_type=Path), help="HTML file [<run-dir>/report.html].")
def report_command(run_dir: Path, output: Path | None) -> None:
    """Every benchmark result under the run directory, on one static HTML page."""
    if not run_dir.is_dir():
        raise CliError(f"--run-dir {run_dir} is not a directory")
    output = output or run_dir / "report.html"
    if output.is_dir():
        raise CliError(f"--output {output} is a directory")
    results, unknown = find_results(run_dir, registry())
    if not results:
        raise CliError(f"no benchmark result JSON under {run_dir}")
    page, plots = render(results, run_dir.resolve(), unknown)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    names = ", ".join(dict.fromkeys(r.name for r in results))
    console.print(f"report: {output} — {len(results)} results ({names}), {plots} plots")
