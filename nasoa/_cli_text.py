"""What ``nasoa-submit`` prints: consoles, JSON, plans, results and job tables (rich)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["make_console", "job_table", "plan_text", "print_json", "result_text"]


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Tables printed into a pipe or a file get room instead of a terminal's default 80 columns.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, width=width, soft_wrap=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def plan_text(plan: Any) -> list[str]:
    p = plan.prediction
    return [
        f"plan ({plan.policy}): {plan.candidate.describe()}",
        f"  predicted accuracy {p.accuracy:.1f}% (+/- {p.accuracy_std:.1f}), "
        f"time {p.seconds:.1f}s (+/- {p.seconds_std:.1f}), margin x{plan.time_margin:.2f}"
        + ("" if plan.feasible else "  [nothing predicted to fit: the fastest candidate]"),
    ]


def result_text(job: Any) -> str:
    if job.result is None:
        return f"result: {job.state.value} {job.message}".rstrip()
    r, p = job.result, job.plan.prediction
    line = (f"result: {job.state.value} accuracy {r.accuracy:.1f}% in {r.seconds:.1f}s "
            f"(budget {job.task.budget_seconds:.0f}s; predicted {p.accuracy:.1f}% in {p.seconds:.1f}s)")
    return line + (f": {job.message}" if job.state.value == "FAILED" else f" {r.message}".rstrip())


def job_table(jobs: Sequence[Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in (("job", "left"), ("state", "left"), ("dataset", "left"), ("budget", "right"),
                          ("plan", "left"), ("pred acc", "right"), ("acc", "right"), ("pred s", "right"),
                          ("s", "right"), ("error / message", "left")):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name == "job")  # type: ignore[arg-type]
    for job in jobs:
        p, r = job.plan.prediction, job.result
        style = "red" if job.state.value in ("FAILED", "CANCELLED") else None
        table.add_row(
            job.job_id, job.state.value, job.task.dataset_uri, f"{job.task.budget_seconds:g}s",
            job.plan.candidate.describe(), f"{p.accuracy:.1f}%", f"{r.accuracy:.1f}%" if r else "-",
            f"{p.seconds:.1f}", f"{r.seconds:.1f}" if r else "-", job.message, style=style,
        )
    make_console().print(table)
