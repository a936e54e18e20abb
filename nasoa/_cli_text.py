"""What ``nasoa-submit`` prints: consoles, JSON, plans, results and job tables (rich)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "child_rows",
    "children_table",
    "job_json",
    "job_table",
    "make_console",
    "plan_text",
    "print_json",
    "print_plan",
    "result_text",
    "stage_tables",
    "staged_result_lines",
    "worker_seconds_text",
]


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Tables printed into a pipe or a file get room instead of a terminal's default 80 columns.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, width=width, soft_wrap=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def plan_text(plan: Any, budget_seconds: float | None = None) -> list[str]:
    """The plan's head lines: the run (a one-shot plan), or the schedule's outline (a staged plan)."""
    p = plan.prediction
    if plan.staged:
        return _staged_plan_text(plan, budget_seconds)
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
    if job.plan.staged:  # the result is the winner's; its seconds are the worker-seconds of every run
        line = (f"result: {job.state.value} accuracy {r.accuracy:.1f}% in {r.seconds:.1f} worker-seconds "
                f"(budget {job.task.budget_seconds:.0f}s; predicted {p.accuracy:.1f}% in "
                f"{job.plan.total_seconds():.1f})")
        return line + (f": {job.message}" if job.state.value == "FAILED" else "")
    line = (f"result: {job.state.value} accuracy {r.accuracy:.1f}% in {r.seconds:.1f}s "
            f"(budget {job.task.budget_seconds:.0f}s; predicted {p.accuracy:.1f}% in {p.seconds:.1f}s)")
    return line + (f": {job.message}" if job.state.value == "FAILED" else f" {r.message}".rstrip())


def _plan_cell(job: Any) -> str:
    """The plan in a job table: a staged job says so, a child job names its parent and stage."""
    if job.plan.staged:
        return f"{len(job.plan.stages)} stages, winner: {job.plan.candidate.describe()}"
    if job.parent_job_id:
        return f"stage {job.stage + 1} of {job.parent_job_id}: {job.plan.candidate.describe()}"
    return job.plan.candidate.describe()


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
            _plan_cell(job), f"{p.accuracy:.1f}%", f"{r.accuracy:.1f}%" if r else "-",
            f"{p.seconds:.1f}", f"{r.seconds:.1f}" if r else "-", job.message, style=style,
        )
    make_console().print(table)


_SHORT_NAMES = {"batch_size": "bs", "frozen_stages": "frozen", "weight_decay": "wd", "optimizer": ""}


def _regime(candidate: Any) -> str:
    """The hyperparameters in a table's width: ``lr=0.1 bs=64 frozen=0 sgd wd=0.0001``."""
    parts = []
    for key, value in sorted(candidate.hparams.items(), key=lambda kv: kv[0] != "lr"):
        short = _SHORT_NAMES.get(key, key)
        parts.append(f"{short}={value}" if short else str(value))
    return " ".join(parts)


def _budget_share(seconds: float, budget_seconds: float | None) -> str:
    return f" of the {budget_seconds:g}s budget ({seconds / budget_seconds:.0%})" if budget_seconds else ""


def _staged_plan_text(plan: Any, budget_seconds: float | None) -> list[str]:
    p, stages = plan.prediction, plan.stages
    planned = plan.total_seconds()
    margin = f", x margin {plan.time_margin:.2f}: {planned * plan.time_margin:.1f}s" + (
        f" ({planned * plan.time_margin / budget_seconds:.0%})" if budget_seconds else "")
    return [
        f"plan ({plan.policy}): {len(stages)} stages, {len(stages[0].runs)} runs started, "
        f"{len(stages[-1].runs)} trained to the end of its schedule",
        f"  planned {planned:.1f} worker-seconds{_budget_share(planned, budget_seconds)}{margin}"
        + ("" if plan.feasible else "  [nothing predicted to fit]"),
        f"  predicted winner: {plan.candidate.describe()}: accuracy {p.accuracy:.1f}% (+/- {p.accuracy_std:.1f}), "
        f"time {p.seconds:.1f}s (+/- {p.seconds_std:.1f}) for its whole schedule",
    ]


def _stage_title(plan: Any, index: int) -> str:
    stage = plan.stages[index]
    count = len(stage.runs)
    head = f"stage {index + 1} of {len(plan.stages)}: {count} run{'s' if count != 1 else ''}"
    if stage.stop_after_epochs:
        head += f" train{'s' if count == 1 else ''} to epoch {stage.stop_after_epochs} of their schedule"
    else:
        head += f" train{'s' if count == 1 else ''} to the end of {'its' if count == 1 else 'their'} schedule"
    if stage.keep:
        head += f"; the best {stage.keep} by their curves continue"
    return head


def stage_tables(plan: Any) -> list[Any]:
    """One rich table per stage of a staged plan: its runs, how far each trains, its predictions."""
    from rich.table import Table

    tables = []
    for index, stage in enumerate(plan.stages):
        following = plan.stages[index + 1] if index + 1 < len(plan.stages) else None
        continuing = {run.key for run in following.runs} if following is not None else set()
        table = Table(title=_stage_title(plan, index), title_justify="left")
        columns = ["run", "model", "regime", "planned epochs", "trains to epoch", "pred acc (whole run)",
                   "pred s (whole run)"]
        if following is not None:
            columns.append("continues (planned)")
        for name in columns:
            table.add_column(name, justify="left" if name in ("model", "regime", "continues (planned)") else "right")
        for number, (run, prediction) in enumerate(zip(stage.runs, stage.predictions, strict=True), start=1):
            row = [f"{number}/{len(stage.runs)}", run.model, _regime(run), str(run.epochs),
                   str(stage.stop_after_epochs or run.epochs), f"{prediction.accuracy:.1f}%", f"{prediction.seconds:.1f}"]
            if following is not None:
                row.append("yes" if run.key in continuing else "")
            table.add_row(*row)
        tables.append(table)
    return tables


def print_plan(console: Any, plan: Any, budget_seconds: float | None = None) -> None:
    """The plan's head lines and, for a staged plan, a table per stage."""
    for line in plan_text(plan, budget_seconds):
        console.print(line, markup=False)
    if plan.staged:
        for table in stage_tables(plan):
            console.print(table)


def child_rows(children: Sequence[Any]) -> list[dict[str, Any]]:
    """The child jobs of a staged job as plain rows: stage, run (within its stage), state, epochs, result."""
    counts: dict[int, int] = {}
    for child in children:
        counts[child.stage] = counts.get(child.stage, 0) + 1
    seen: dict[int, int] = {}
    resumed = {child.resume_from_job_id for child in children if child.resume_from_job_id}
    rows = []
    for child in children:
        seen[child.stage] = seen.get(child.stage, 0) + 1
        result, candidate = child.result, child.plan.candidate
        rows.append({
            "job_id": child.job_id,
            "stage": child.stage + 1,
            "run": seen[child.stage],
            "runs_in_stage": counts[child.stage],
            "state": child.state.value,
            "model": candidate.model,
            "hparams": dict(candidate.hparams),
            "planned_epochs": candidate.epochs,
            "trains_to_epoch": child.stop_after_epochs or candidate.epochs,
            "epochs_trained": result.curve[-1].epoch if result is not None and result.curve else 0,
            "accuracy": result.accuracy if result is not None else None,
            "seconds": result.seconds if result is not None else None,
            "status": result.status if result is not None else None,
            "resume_from_job_id": child.resume_from_job_id or None,
            "continued": child.job_id in resumed,
        })
    return rows


def children_table(job: Any, children: Sequence[Any]) -> Any:
    """A rich table of a staged job's child jobs."""
    from rich.table import Table

    stages = len(job.plan.stages) or max((c.stage + 1 for c in children), default=0)
    table = Table(title=f"child jobs: {len(children)} over {stages} stage{'s' if stages != 1 else ''}",
                  title_justify="left")
    for name in ("job", "stage", "run", "model", "regime", "state", "epochs", "accuracy", "s", "status", "continued"):
        table.add_column(name, justify="right" if name in ("stage", "run", "epochs", "accuracy", "s") else "left",
                         no_wrap=name == "job")
    for row, child in zip(child_rows(children), children, strict=True):
        style = "red" if row["state"] in ("FAILED", "CANCELLED") else None
        table.add_row(
            row["job_id"], f"{row['stage']}/{stages}", f"{row['run']}/{row['runs_in_stage']}", row["model"],
            _regime(child.plan.candidate), row["state"], f"{row['epochs_trained']}/{row['trains_to_epoch']}",
            "-" if row["accuracy"] is None else f"{row['accuracy']:.1f}%",
            "-" if row["seconds"] is None else f"{row['seconds']:.1f}", row["status"] or "-",
            "yes" if row["continued"] else "", style=style,
        )
    return table


def worker_seconds_text(job: Any, children: Sequence[Any]) -> str:
    """The worker-seconds the child jobs of a staged job used, against the budget."""
    used = sum(c.result.seconds for c in children if c.result is not None)
    return (f"worker-seconds: {used:.1f} over {len(children)} child jobs"
            f"{_budget_share(used, job.task.budget_seconds)}")


def _winner(job: Any, children: Sequence[Any]) -> tuple[dict[str, Any], Any] | None:
    """The child job whose model the staged job ended with (its artifact), else the last one that finished."""
    rows = [(row, child) for row, child in zip(child_rows(children), children, strict=True) if child.result is not None]
    artifact = job.result.artifact_id if job.result is not None else ""
    for row, child in rows:
        if artifact and child.result.artifact_id == artifact:
            return row, child
    finished = [(row, child) for row, child in rows if row["status"] in ("ok", "deadline")]
    return finished[-1] if finished else None


def staged_result_lines(job: Any, children: Sequence[Any]) -> list[str]:
    """After a staged job's result: which child run won, and the worker-seconds all of them used."""
    lines = []
    winner = _winner(job, children)
    if winner is not None:
        row, child = winner
        lines.append(f"winner: stage {row['stage']}, run {row['run']}/{row['runs_in_stage']} (job {row['job_id']}): "
                     f"{row['model']} {_regime(child.plan.candidate)}, {row['epochs_trained']} epochs")
    return [*lines, worker_seconds_text(job, children)]


def job_json(job: Any, children: Sequence[Any] = ()) -> dict[str, Any]:
    """A job's ``--json`` record; a staged job's with its child jobs."""
    from nasoa import job_record

    record = job_record(job)
    if job.child_job_ids:
        record["children"] = child_rows(children)
    return record
