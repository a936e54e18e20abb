"""Jobs, plans and statistics as plain values: what ``--json`` prints and DataFrames hold.

Numbers are numbers, hyperparameters plain values (never protobuf oneofs), times ISO 8601
in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["iso_time", "job_record", "leaderboard_rows", "plan_record", "stats_record"]


def iso_time(timestamp: float) -> str | None:
    """``2026-11-30T21:02:03.120000+00:00`` from a Unix time; None for 0 (unset).

    >>> iso_time(0) is None, iso_time(1.5)
    (True, '1970-01-01T00:00:01.500000+00:00')
    """
    if not timestamp:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="microseconds")


def _candidate(candidate: Any) -> dict[str, Any]:
    return {"model": candidate.model, "epochs": candidate.epochs, "hparams": dict(candidate.hparams)}


def _prediction(prediction: Any) -> dict[str, float]:
    return {
        "accuracy": prediction.accuracy,
        "accuracy_std": prediction.accuracy_std,
        "seconds": prediction.seconds,
        "seconds_std": prediction.seconds_std,
    }


def plan_record(plan: Any) -> dict[str, Any]:
    """A plan with its runners-up and why each lost."""
    return {
        **_candidate(plan.candidate),
        "policy": plan.policy,
        "predicted": _prediction(plan.prediction),
        "time_margin": plan.time_margin,
        "feasible": plan.feasible,
        "runners_up": [
            {**_candidate(a.candidate), "predicted": _prediction(a.prediction), "reason": a.reason}
            for a in plan.alternatives
        ],
        "planned_seconds": plan.total_seconds(),
        "staged": plan.staged,
        "stages": [
            {
                "stage": index + 1,
                "trains_to_epoch": stage.stop_after_epochs or None,  # None: each run's whole schedule
                "keep": stage.keep,
                "runs": [
                    {**_candidate(run), "predicted": _prediction(prediction)}
                    for run, prediction in zip(stage.runs, stage.predictions, strict=True)
                ],
            }
            for index, stage in enumerate(plan.stages)
        ],
    }


def job_record(job: Any) -> dict[str, Any]:
    """A job: its task, plan, state (with the error of a failed job) and result."""
    result = job.result
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "error": job.message if job.state.value == "FAILED" else None,
        "message": job.message,
        "dataset": job.task.dataset_uri,
        "budget_seconds": job.task.budget_seconds,
        "device_class": job.task.device_class,
        "created_at": iso_time(job.created_at),
        "updated_at": iso_time(job.updated_at),
        "plan": plan_record(job.plan),
        "parent_job_id": job.parent_job_id or None,
        "stage": job.stage + 1 if job.parent_job_id else None,
        "stop_after_epochs": job.stop_after_epochs or None,
        "resume_from_job_id": job.resume_from_job_id or None,
        "child_job_ids": list(job.child_job_ids),
        "result": None if result is None else {
            "status": result.status,
            "accuracy": result.accuracy,
            "seconds": result.seconds,
            "message": result.message,
            "curve": [{"epoch": p.epoch, "accuracy": p.accuracy, "seconds": p.seconds} for p in result.curve],
            "artifact_id": result.artifact_id or None,
        },
    }


def stats_record(stats: Any) -> dict[str, Any]:
    """The adaptor's GetStats reply with integer counts and float errors."""
    return {
        "observations": int(stats.observations),
        "jobs": int(stats.jobs),
        "jobs_by_state": {k: int(v) for k, v in sorted(stats.jobs_by_state.items())},
        "accuracy_mae": float(stats.accuracy_mae),
        "time_relative_error": float(stats.time_relative_error),
        "candidates": int(stats.candidates),
        "policy": stats.policy,
        "time_margin": float(stats.time_margin),
    }


def leaderboard_rows(jobs: Any) -> list[dict[str, Any]]:
    """One flat row per job that has a result, best accuracy first (the leaderboard)."""
    rows = []
    for job in jobs:
        if job.result is None:
            continue
        plan, result = job.plan, job.result
        rows.append({
            "job_id": job.job_id,
            "dataset": job.task.dataset_uri,
            "state": job.state.value,
            "model": plan.candidate.model,
            "epochs": plan.candidate.epochs,
            **{f"hp_{k}": v for k, v in plan.candidate.hparams.items()},
            "budget_seconds": job.task.budget_seconds,
            "accuracy": result.accuracy,
            "predicted_accuracy": plan.prediction.accuracy,
            "seconds": result.seconds,
            "predicted_seconds": plan.prediction.seconds,
            "budget_used": result.seconds / job.task.budget_seconds,
            "epochs_run": len(result.curve),
            "stages": max(len(plan.stages), 1),
            "parent_job_id": job.parent_job_id or None,  # a run of a staged job
            "created_at": iso_time(job.created_at),
            "error": job.message if job.state.value == "FAILED" else None,
        })
    rows.sort(key=lambda r: (r["state"] != "DONE", -r["accuracy"], r["created_at"] or ""))
    return rows
