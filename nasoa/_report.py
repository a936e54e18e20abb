"""``nasoa-submit report --html``: one self-contained HTML page of the service's jobs.

The page embeds plotly.js (no network needed) and shows predicted against actual accuracy
and time, the prediction error and the regret along the stream, the budget each job used,
and the leaderboard with a link to each job's artifact.

Regret of a job, in hindsight: the best accuracy any finished job reached on the same dataset
with a budget no larger than this job's, minus this job's accuracy (0 for the best one).
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["regrets", "write_report"]

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
th:nth-child(-n+4), td:nth-child(-n+4) {{ text-align: left; }}
.FAILED, .CANCELLED {{ color: #b00; }}
.summary span {{ margin-right: 2em; }}
</style>
{plotly}
</head><body>
<h1>{title}</h1>
<p class="summary">{summary}</p>
<h2>Predicted and actual</h2>{accuracy_time}
<h2>Along the stream</h2>
<p>Prediction error of each job, and its regret: the best accuracy reached on the same dataset
within a budget no larger than the job's, minus the job's accuracy.</p>{stream}
<h2>Budget use</h2>{budget}
<h2>Leaderboard</h2>{leaderboard}
</body></html>
"""


def regrets(jobs: Sequence[Any]) -> list[float]:
    """Hindsight regret of each job with a result (see the module docstring), in order."""
    done = [j for j in jobs if j.result is not None and j.state.value == "DONE"]
    out = []
    for job in jobs:
        if job.result is None:
            continue
        peers = [p.result.accuracy for p in done if p.task.dataset_uri == job.task.dataset_uri
                 and p.task.budget_seconds <= job.task.budget_seconds]
        accuracy = job.result.accuracy if job.state.value == "DONE" else 0.0
        out.append(max([*peers, accuracy]) - accuracy)
    return out


def _div(figure: Any, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                          config={"displaylogo": False, "responsive": True})


def _figures(jobs: Sequence[Any]) -> dict[str, str]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ids = [j.job_id[:8] for j in jobs]
    hover = [f"{j.job_id[:8]} {j.task.dataset_uri} {j.plan.candidate.describe()}" for j in jobs]
    pred_acc = [j.plan.prediction.accuracy for j in jobs]
    acc = [j.result.accuracy for j in jobs]
    pred_sec = [j.plan.prediction.seconds for j in jobs]
    sec = [j.result.seconds for j in jobs]

    both = make_subplots(rows=1, cols=2, subplot_titles=("accuracy (%)", "time (s)"))
    for col, (pred, real) in enumerate(((pred_acc, acc), (pred_sec, sec)), start=1):
        both.add_trace(go.Scatter(x=pred, y=real, mode="markers", hovertext=hover, name=("accuracy", "time")[col - 1],
                                  marker={"size": 9}), row=1, col=col)
        top = max([*pred, *real, 1.0])
        both.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="predicted = actual",
                                  line={"dash": "dot", "color": "grey"}, showlegend=col == 1), row=1, col=col)
        both.update_xaxes(title_text="predicted", row=1, col=col)
        both.update_yaxes(title_text="actual", row=1, col=col)
    both.update_layout(height=420, margin={"t": 40})

    n = list(range(1, len(jobs) + 1))
    stream = make_subplots(rows=1, cols=2, subplot_titles=("prediction error", "regret (accuracy points)"))
    stream.add_trace(go.Scatter(x=n, y=[abs(p - a) for p, a in zip(pred_acc, acc, strict=True)], hovertext=hover,
                                mode="lines+markers", name="accuracy error (points)"), row=1, col=1)
    stream.add_trace(go.Scatter(x=n, y=[100 * abs(p - s) / max(s, 1e-9) for p, s in zip(pred_sec, sec, strict=True)],
                                hovertext=hover, mode="lines+markers", name="time error (% of actual)"), row=1, col=1)
    regret = regrets(jobs)
    mean = [sum(regret[:i]) / i for i in n]
    stream.add_trace(go.Bar(x=n, y=regret, hovertext=hover, name="regret"), row=1, col=2)
    stream.add_trace(go.Scatter(x=n, y=mean, mode="lines", name="mean regret so far"), row=1, col=2)
    stream.update_xaxes(title_text="job (in submission order)")
    stream.update_layout(height=420, margin={"t": 40})

    budget = go.Figure(go.Bar(
        x=ids, y=[100 * j.result.seconds / j.task.budget_seconds for j in jobs], hovertext=hover,
        marker={"color": ["#1f77b4" if j.state.value == "DONE" else "#d62728" for j in jobs]}, name="budget used",
    ))
    budget.add_hline(y=100, line_dash="dot", annotation_text="budget")
    budget.update_layout(height=380, margin={"t": 30}, yaxis_title="% of the budget used", xaxis_title="job")
    return {"accuracy_time": _div(both, "predicted-vs-actual"), "stream": _div(stream, "stream"),
            "budget": _div(budget, "budget-use")}


def _leaderboard(jobs: Sequence[Any], artifact_link: Callable[[Any], str | None]) -> str:
    from nasoa._records import leaderboard_rows

    by_id = {j.job_id: j for j in jobs}
    head = ("job", "dataset", "state", "plan", "accuracy", "predicted", "seconds", "budget", "artifact")
    rows = []
    for row in leaderboard_rows(jobs):
        job = by_id[row["job_id"]]
        link = artifact_link(job)
        artifact_id = getattr(job.result, "artifact_id", "")
        if link:
            artifact = f'<a href="{html.escape(link)}">{html.escape(artifact_id or "model")}</a>'
        elif artifact_id:  # not downloaded: say how to get it
            artifact = (f'<span title="nasoa-submit download {html.escape(job.job_id)}">'
                        f'{html.escape(artifact_id)}</span>')
        else:
            artifact = "-"
        cells = (
            html.escape(row["job_id"]), html.escape(row["dataset"]),
            f'<span class="{row["state"]}" title="{html.escape(row["error"] or "")}">{row["state"]}</span>',
            html.escape(job.plan.candidate.describe()), f'{row["accuracy"]:.1f}%', f'{row["predicted_accuracy"]:.1f}%',
            f'{row["seconds"]:.1f}', f'{row["budget_seconds"]:.0f}', artifact,
        )
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    return f'<table id="leaderboard"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'


def _no_link(job: Any) -> str | None:
    return None


def write_report(
    jobs: Sequence[Any],
    path: str | os.PathLike[str],
    stats: Mapping[str, Any] | None = None,
    artifact_link: Callable[[Any], str | None] = _no_link,
    title: str = "NASOA report",
) -> Path:
    """Write the page for ``jobs`` (those with a result are plotted, oldest first) to ``path``.

    ``artifact_link(job)`` gives the leaderboard's link to a job's model (e.g. the manifest of
    its downloaded folder, relative to the page); without a link the artifact id is shown.
    """
    from plotly.offline import get_plotlyjs

    finished = sorted((j for j in jobs if j.result is not None), key=lambda j: j.created_at)
    if not finished:
        raise ValueError("no finished job to report on yet: submit one with `nasoa-submit submit ... --wait`")
    summary = [f"<span>{len(finished)} finished jobs</span>",
               f"<span>{sum(j.state.value == 'DONE' for j in finished)} done</span>"]
    if stats:
        summary += [f"<span>{stats['observations']} observations learned</span>",
                    f"<span>accuracy MAE {stats['accuracy_mae']:.1f} points</span>",
                    f"<span>time error {100 * stats['time_relative_error']:.0f}%</span>",
                    f"<span>policy {html.escape(str(stats['policy']))}</span>"]
    page = PAGE.format(
        title=html.escape(title),
        plotly=f'<script type="text/javascript">{get_plotlyjs()}</script>',
        summary="".join(summary),
        leaderboard=_leaderboard(finished, artifact_link),
        **_figures(finished),
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
