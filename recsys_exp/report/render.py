"""Render a :class:`recsys_exp.report.Report`: PNG plots, report.md and a self-contained report.html.

Both documents come from one list of blocks, so they always say the same thing; the HTML embeds
each PNG as base64, the Markdown links the PNG files written beside it.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys_exp.run_dir import atomic_write_text

if TYPE_CHECKING:
    from recsys_exp.report import EnvSection, OffPolicySummary, Report

Block = tuple  # ("h1" | "h2" | "h3", text) | ("p", text) | ("ul", [items]) | ("table", header, rows) | ("img", file, alt)

REFERENCE = ("R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville, M. G. Bellemare (2021), "
             "Deep Reinforcement Learning at the Edge of the Statistical Precipice, NeurIPS")


# ---- number formatting -----------------------------------------------------------------------

def fmt(x: float | None, digits: int = 2) -> str:
    """A return or probability; an em dash for nothing."""
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def fmt_ci(ci: tuple[float, float] | None, digits: int = 2) -> str:
    """``[low, high]``; an em dash without a CI."""
    return "—" if ci is None else f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def fmt_rate(x: float | None) -> str:
    """Env steps per second with thousands separators."""
    return "—" if x is None else f"{x:,.0f}"


def fmt_duration(seconds: float | None) -> str:
    """``42.0 s``, ``3m 05s``, ``1h 02m``."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m {s:02d}s" if m < 60 else f"{m // 60}h {m % 60:02d}m"


def slug(text: str) -> str:
    """A file-name-safe version of an env label."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "env"


# ---- plots -----------------------------------------------------------------------------------

def _figure(figsize: tuple[float, float]):
    """(figure, axes) drawn without pyplot: no global backend switch, so a notebook that calls the
    report keeps showing its own plots."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No Software/date metadata: the same runs give byte-identical PNGs.
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def plot_curves(section: EnvSection) -> bytes | None:
    """Training return vs env steps per algorithm: mean over seeds and its bootstrap 95% band."""
    if not section.curves:
        return None
    from matplotlib import colormaps

    fig, ax = _figure((7.5, 4.5))
    colors = colormaps["tab10" if len(section.curves) <= 10 else "tab20"].colors
    for i, (label, band) in enumerate(section.curves.items()):
        color = colors[i % len(colors)]
        name = f"{label} ({_seeds(int(band['n'].max()))})"
        if len(band["steps"]) == 1:  # one iteration with finished episodes: a band would be invisible
            m = band["mean"]
            ax.errorbar(band["steps"], m, yerr=[m - band["low"], band["high"] - m], fmt="o", color=color,
                        capsize=4, ms=4, label=name)
            continue
        few = len(band["steps"]) <= 25  # sparse curves (one point per iteration): show the points
        ax.plot(band["steps"], band["mean"], color=color, marker="o" if few else None, ms=3, label=name)
        ax.fill_between(band["steps"], band["low"], band["high"], color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return")
    ax.set_title(f"{section.env}: mean over seeds, 95% bootstrap band")
    ax.grid(alpha=0.3)
    # Below the axes: sweep trial labels (id + parameters) are long.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.15))
    fig.tight_layout()
    return _png(fig)


def poi_matrix(section: EnvSection) -> tuple[list[str], np.ndarray]:
    """(labels, P) with ``P[i, j] = P(label_i > label_j)``, NaN on the diagonal."""
    labels = [a.label for a in section.rows if a.runs]
    p = np.full((len(labels), len(labels)), np.nan)
    for i, x in enumerate(labels):
        for j, y in enumerate(labels):
            if (x, y) in section.poi:
                p[i, j] = section.poi[(x, y)][0]
    return labels, p


def plot_poi(section: EnvSection) -> bytes | None:
    """Heat map of P(row > column) with the 95% CIs written in the cells."""
    labels, p = poi_matrix(section)
    if len(labels) < 2:
        return None
    n = len(labels)
    fig, ax = _figure((2.5 + 1.1 * n, 1.5 + 1.0 * n))
    im = ax.imshow(p, cmap="RdBu", vmin=0, vmax=1)
    for i, x in enumerate(labels):
        for j, y in enumerate(labels):
            if i != j:
                prob, ci = section.poi[(x, y)]
                text = fmt(prob) + ("" if ci is None else f"\n{fmt_ci(ci)}")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if abs(prob - 0.5) > 0.3 else "black")
    ax.set_xticks(range(n), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("Y (column)")
    ax.set_ylabel("X (row)")
    ax.set_title(f"{section.env}: P(X > Y) over seeds")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _png(fig)


# ---- document blocks ---------------------------------------------------------------------------

TABLE_HEADER = ["algorithm", "runs", "mean", "IQM", "95% CI (IQM, stratified bootstrap)", "mean 95% CI",
                "env steps/s", "wall time"]


LOW_ESS_MARK = "⚠"


def fmt_sessions(span: tuple[int, int] | None) -> str:
    """``200`` or ``190–210`` (smallest–largest over runs); an em dash for nothing."""
    if span is None:
        return "—"
    return f"{span[0]:,}" if span[0] == span[1] else f"{span[0]:,}–{span[1]:,}"


def off_policy_header(op: OffPolicySummary) -> list[str]:
    """The results table's header for off-policy scores: the estimator and the held-out sessions
    are in the score columns' names."""
    what = f"{'/'.join(op.estimators)} off-policy estimate, {fmt_sessions(op.held_out)} held-out sessions"
    return ["algorithm", "runs", f"mean ({what})", "IQM", "95% CI (IQM, stratified bootstrap)", "mean 95% CI",
            "held-out sessions", "smallest ESS", "rows trained/s", "wall time"]


def off_policy_note(op: OffPolicySummary) -> str:
    """The paragraph above an off-policy results table: what the scores are and what is flagged."""
    from recsys_exp.report import ESS_MIN, ESS_MIN_SHARE

    share = ", ".join(f"{f:g}" for f in op.held_out_fraction) or "?"
    return (f"Off-policy estimates, not simulated returns (env=logged has no simulator): each score is the "
            f"`{'`/`'.join(op.estimators)}` estimate (offline.select_by) of the trained policy's value on the "
            f"{fmt_sessions(op.held_out)} sessions held out of its training (offline.eval_fraction {share}). "
            f"{LOW_ESS_MARK} marks estimates too weakly supported to rank by: effective sample size (Kish, "
            f"(Σw)²/Σw² of the sessions' importance weights) below {ESS_MIN:g} or below {ESS_MIN_SHARE:.0%} of the "
            f"held-out sessions. Under {ESS_MIN:g} effective sessions a handful of sessions decide the estimate and "
            f"its bootstrap CI; under {ESS_MIN_SHARE:.0%} the weights are degenerate (the policy rarely picks the "
            f"logged slates), so a few large-weight sessions and the exactness of their logged propensities decide "
            f"it. An unweighted estimator (`dm`) counts each held-out session once: its ESS is their number. "
            f"{LOW_ESS_MARK} also marks estimates that ope.json's verdict calls unreliable (e.g. the mean importance "
            f"weight is not 1, or the fitted Q model fails its checks); each one's reason is listed below the table.")


def _env_blocks(section: EnvSection, images: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [("h2", section.env)]
    op = section.off_policy
    rows = []
    for a in section.rows:
        runs = str(a.runs) if a.runs == a.total else f"{a.runs} of {a.total}"
        if op is None:
            rows.append([a.label, runs, fmt(a.mean), fmt(a.iqm), fmt_ci(a.iqm_ci), fmt_ci(a.mean_ci),
                         fmt_rate(a.env_steps_per_s), fmt_duration(a.wall_s)])
            continue
        ess = "—" if a.ess_min is None else f"{a.ess_min:,.1f}"
        if a.flagged:
            ess += f" {LOW_ESS_MARK} ({len(a.flagged)} of {a.runs} runs)"
        label = f"{a.label} {LOW_ESS_MARK}" if a.flagged else a.label
        rows.append([label, runs, fmt(a.mean, 4), fmt(a.iqm, 4), fmt_ci(a.iqm_ci, 4), fmt_ci(a.mean_ci, 4),
                     fmt_sessions(a.held_out), ess, fmt_rate(a.env_steps_per_s), fmt_duration(a.wall_s)])
    if op is not None:
        blocks.append(("p", off_policy_note(op)))
        blocks.append(("table", off_policy_header(op), rows))
        if op.flagged:
            blocks.append(("p", f"{LOW_ESS_MARK} Estimates too weakly supported to rank by:"))
            blocks.append(("ul", [f"{name}: {why}" for name, why in op.flagged]))
    else:
        blocks.append(("table", TABLE_HEADER, rows))
    curves, poi = f"report_{slug(section.env)}_curves.png", f"report_{slug(section.env)}_poi.png"
    blocks.append(("h3", "Learning curves"))
    if curves in images:
        blocks.append(("img", curves, f"learning curves on {section.env}"))
    elif op is not None:
        blocks.append(("p", ("No learning curves: env=logged has no simulator, so training has no episode returns "
                             "(a run's score is its off-policy estimate after training).")))
    else:
        blocks.append(("p", "No learning-curve data: no metrics.csv row with a finished training episode."))
    blocks.append(("h3", "Probability of improvement"))
    labels, p = poi_matrix(section)
    if len(labels) < 2:
        blocks.append(("p", "Needs at least two algorithms with a final evaluation."))
        return blocks
    score = "final return" if op is None else "off-policy estimate"
    blocks.append(("p", (f"P(row > column): the probability that a random seed of the row algorithm ends with a "
                         f"higher {score} than a random seed of the column algorithm (ties count ½), with a "
                         f"95% CI from resampling both algorithms' seeds independently.")))
    table = [[x] + ["—" if x == y else fmt(section.poi[(x, y)][0]) + (
        "" if section.poi[(x, y)][1] is None else " " + fmt_ci(section.poi[(x, y)][1])) for y in labels]
        for x in labels]
    blocks.append(("table", ["P(row > column)"] + labels, table))
    if poi in images:
        blocks.append(("img", poi, f"probability of improvement on {section.env}"))
    return blocks


def blocks(report: Report, images: dict[str, bytes]) -> list[Block]:
    """The report as a list of blocks (headings, paragraphs, tables, images, lists)."""
    c = report.counts
    extra = "".join(f", {c[k]} {k}" for k in ("stopped early", "skipped") if c.get(k))
    counts = (f"{c['found']} runs found: {c['completed']} completed, {c['failed']} failed, "
              f"{c['missing']} missing or incomplete{extra}.")
    out: list[Block] = [
        ("h1", "recsys_exp comparison report"),
        ("ul", [f"dirs: {', '.join(str(d) for d in report.dirs)}", f"written: {report.created}", counts]),
        ("p", ("Score of a run: its final greedy-evaluation return (summary.json `eval_return_mean`; for a sweep "
               "trial, each seed's `eval_per_seed`; for env=logged runs, which have no simulator, the off-policy "
               "estimate on their held-out sessions, as their sections say); the replicates are the seeds. IQM: "
               "interquartile mean, the mean of the seeds' scores after cutting ⌊n/4⌋ of n at each end "
               "(scipy.stats.trim_mean(x, 0.25); the plain mean below 4 seeds). 95% CIs: percentile stratified "
               f"bootstrap over seeds within each env, {report.reps:,} resamples, RNG seed {report.seed} (— with "
               f"fewer than 2 runs). env steps/s and wall time: mean over runs. Methods: {REFERENCE}.")),
    ]
    if not report.sections:
        out.append(("p", "No run with a known env and algorithm was found."))
    for section in report.sections:
        out.extend(_env_blocks(section, images))
    out.append(("h2", "Missing, failed or incomplete runs"))
    out.append(("ul", [f"{name}: {problem}" for name, problem in report.problems] or ["none"]))
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: list[Block]) -> str:
    """report.md: PNGs linked by file name (they sit beside it)."""
    lines: list[str] = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            header, rows = block[1], block[2]
            align = ["---"] + ["---:" if h not in ("P(row > column)",) else "---" for h in header[1:]]
            lines += ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "|".join(align) + "|"]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    # `code` spans are the only inline markup the blocks use
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
       "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
       "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
       "code{background:#f3f3f3;padding:0 3px}")


def to_html(doc: list[Block], images: dict[str, bytes]) -> str:
    """report.html: one file, the PNGs embedded as base64 data URIs."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>recsys_exp comparison report</title>", f"<style>{CSS}</style></head><body>"]
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{_inline_html(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(images[block[1]]).decode("ascii")
            parts.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---- files -------------------------------------------------------------------------------------

def _write_bytes(path: Path, data: bytes) -> None:
    # Same temp-file-and-rename scheme as atomic_write_text, for binary files.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: Report, out_dir: Path) -> dict[str, Any]:
    """Write the PNGs, report.md and report.html into ``out_dir``; returns their paths
    (``md``, ``html`` and ``png``: a list)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    for section in report.sections:
        for kind, plot in (("curves", plot_curves), ("poi", plot_poi)):
            png = plot(section)
            if png is not None:
                images[f"report_{slug(section.env)}_{kind}.png"] = png
    for name, data in images.items():
        _write_bytes(out_dir / name, data)
    doc = blocks(report, images)
    atomic_write_text(out_dir / "report.md", to_markdown(doc))
    atomic_write_text(out_dir / "report.html", to_html(doc, images))
    return {"md": out_dir / "report.md", "html": out_dir / "report.html", "png": [out_dir / n for n in images]}
