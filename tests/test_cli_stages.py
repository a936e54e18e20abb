"""``nasoa-submit`` on staged plans, run as a user runs it against a real adaptor gRPC server.

The server plans with successive halving, so ``plan`` shows a real staged plan. A staged job
and its child jobs are written to the adaptor's store the way its orchestration keeps them,
and its stream gets the stage and forwarded progress events, so ``status`` and ``watch`` are
checked without fine-tuning.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import replace

import pytest

from nasoa_contracts import CurvePoint, Job, JobState, Observation, TaskSpec
from tests.test_cli import EXIT_OK, nasoa_submit

SHA = "ab" * 32


@pytest.fixture
def staged_served():
    """A real adaptor gRPC server that plans with successive halving (in-memory store; dispatch recorded)."""
    from adaptor_service import Adaptor, CandidateSpace, ModelInfo, RegimeGrid, SuccessiveHalvingGenerator
    from tests.conftest import serve

    models = [
        ModelInfo("small", {"cpu": 10.0}, num_params=10_000, macs=1_000_000, source_accuracy=50, num_stages=3),
        ModelInfo("large", {"cpu": 80.0}, num_params=900_000, macs=90_000_000, source_accuracy=70, num_stages=4),
    ]
    grid = RegimeGrid(learning_rates=(0.003, 0.01, 0.03, 0.1), epochs=(1, 3, 9), batch_sizes=(64,),
                      frozen_stages=(0, 1), optimizers=("sgd",))
    from tests.test_halving import _Queue

    yield from serve(Adaptor.in_memory(candidate_space=CandidateSpace(models, grid),
                                       generator=SuccessiveHalvingGenerator(), dispatcher=_Queue()))


def _task(budget: float) -> TaskSpec:
    return TaskSpec("builtin:digits", budget, {"num_samples": 1347.0, "num_classes": 10.0})


def test_plan_shows_a_table_per_stage_and_the_budget_share(staged_served, home):
    _, address = staged_served
    proc = nasoa_submit("plan", "builtin:digits", "--budget", "10m", address=address)
    assert proc.returncode == EXIT_OK, proc.stderr
    out = proc.stdout
    head = re.search(r"plan \(asha\): (\d+) stages, (\d+) runs started, 1 trained to the end of its schedule", out)
    assert head is not None, out
    stages, started = int(head[1]), int(head[2])
    assert stages >= 2 and started == 3 ** (stages - 1)
    used = re.search(r"planned (\d+\.\d) worker-seconds of the 600s budget \((\d+)%\), x margin", out)
    assert used is not None and int(used[2]) == round(100 * float(used[1]) / 600)
    for index in range(1, stages + 1):
        assert f"stage {index} of {stages}: {3 ** (stages - index)} run" in out
    assert f"stage 1 of {stages}: {started} runs train to epoch 1 of their schedule; the best {started // 3} by their " \
           "curves continue" in out
    assert "trains to epoch" in out and "continues (planned)" in out and "pred acc" in out
    assert f"stage {stages} of {stages}: 1 run trains to the end of its schedule" in out

    record = json.loads(nasoa_submit("plan", "builtin:digits", "--budget", "10m", "--json", address=address).stdout)
    assert record["staged"] is True and record["budget_seconds"] == 600.0
    assert record["planned_seconds"] * record["time_margin"] <= 600
    assert [len(s["runs"]) for s in record["stages"]] == [3 ** (stages - i) for i in range(1, stages + 1)]
    assert [s["keep"] for s in record["stages"]] == [3 ** (stages - i - 1) for i in range(1, stages)] + [0]
    assert record["stages"][0]["trains_to_epoch"] == 1 and record["stages"][-1]["trains_to_epoch"] is None
    assert isinstance(record["stages"][0]["runs"][0]["predicted"]["seconds"], float)


def test_a_one_shot_plan_looks_as_before(served, home):
    _, address = served
    proc = nasoa_submit("plan", "builtin:digits", "--budget", "30s", address=address)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stdout.startswith("plan (nasoa): ") and "stage 1 of" not in proc.stdout
    record = json.loads(nasoa_submit("plan", "builtin:digits", "--budget", "30s", "--json", address=address).stdout)
    assert record["staged"] is False and record["stages"] == []


def _store_staged_job(adaptor, finished: bool) -> tuple[Job, list[Job]]:
    """A parent job with a three-run first stage and one continued run, as the orchestration stores them."""
    plan = adaptor.recommend(_task(120))
    assert plan.staged
    first = plan.stages[0]
    now = time.time()
    children = []
    for run in range(3):
        candidate = first.runs[run]
        child = Job(f"parent-s0-r{run}", _task(120), replace(plan, stages=(), candidate=candidate,
                                                             prediction=first.predictions[run]),
                    state=JobState.DONE, created_at=now, updated_at=now, parent_job_id="parent", stage=0,
                    stop_after_epochs=first.stop_after_epochs)
        curve = tuple(CurvePoint(e, 40.0 + 10 * run + e, 1.0 * e) for e in range(1, first.stop_after_epochs + 1))
        child.result = Observation(child.job_id, child.task, candidate, curve[-1].accuracy, curve[-1].seconds, curve,
                                   "stopped")
        children.append(child)
    winner = first.runs[2]
    last = Job("parent-s1-r0", _task(120), replace(plan, stages=(), candidate=winner), created_at=now,
               updated_at=now, parent_job_id="parent", stage=1, resume_from_job_id="parent-s0-r2",
               state=JobState.DONE if finished else JobState.RUNNING)
    if finished:
        curve = tuple(CurvePoint(e, 60.0 + e, 1.0 * e) for e in range(1, winner.epochs + 1))
        last.result = Observation(last.job_id, last.task, winner, 91.5, curve[-1].seconds, curve, "ok",
                                  artifact_id=SHA[:16], artifact_sha256=SHA)
    children.append(last)
    parent = Job("parent", _task(120), plan, state=JobState.RUNNING, created_at=now, updated_at=now,
                 child_job_ids=tuple(c.job_id for c in children))
    for job in [parent, *children]:
        adaptor.store.create_job(job)
    return parent, children


def test_status_of_a_staged_job_lists_its_child_jobs(staged_served, home):
    adaptor, address = staged_served
    parent, children = _store_staged_job(adaptor, finished=False)
    proc = nasoa_submit("status", parent.job_id, address=address)
    assert proc.returncode == EXIT_OK, proc.stderr
    out = proc.stdout
    assert "child jobs: 4 over" in out
    for child in children:
        assert child.job_id in out
    assert "stopped" in out and "RUNNING" in out
    assert "worker-seconds: " in out and "of the 120s budget" in out

    record = json.loads(nasoa_submit("status", parent.job_id, "--json", address=address).stdout)
    assert record["child_job_ids"] == [c.job_id for c in children]
    rows = record["children"]
    assert [(r["stage"], r["run"], r["runs_in_stage"]) for r in rows] == [(1, 1, 3), (1, 2, 3), (1, 3, 3), (2, 1, 1)]
    assert [r["continued"] for r in rows] == [False, False, True, False]
    assert rows[2]["epochs_trained"] == parent.plan.stages[0].stop_after_epochs and rows[2]["status"] == "stopped"
    assert rows[3]["resume_from_job_id"] == "parent-s0-r2" and rows[3]["accuracy"] is None

    child = json.loads(nasoa_submit("status", "parent-s1-r0", "--json", address=address).stdout)
    assert child["parent_job_id"] == "parent" and child["stage"] == 2 and "children" not in child
    text = nasoa_submit("status", "parent-s1-r0", address=address).stdout
    assert "child of job parent, stage 2, continues job parent-s0-r2" in text
    listing = nasoa_submit("status", address=address).stdout
    assert f"{len(parent.plan.stages)} stages, winner: " in listing and "stage 2 of parent: " in listing


def test_watch_of_a_staged_job_shows_stages_progress_and_the_winner(staged_served, home):
    """The adaptor's own orchestration runs the stages; the test plays the worker for each child."""
    from tests.test_halving import drive_staged_job

    adaptor, address = staged_served
    parent = adaptor.submit(_task(120), job_id="asha-watch")
    stages = len(parent.plan.stages)
    assert parent.plan.staged

    def work():
        time.sleep(1.0)  # the watch is following by then
        drive_staged_job(adaptor, parent.job_id)

    threading.Thread(target=work, daemon=True).start()
    proc = nasoa_submit("watch", parent.job_id, address=address, timeout=60)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert f"stage 1 of {stages}: {len(parent.plan.stages[0].runs)} runs queued" in proc.stderr
    assert f"stage {stages} of {stages}: 1 run queued" in proc.stderr and "stage 1 decided: " in proc.stderr
    assert re.search(rf"stage {stages} run 1/1 .* {parent.plan.candidate.epochs}/{parent.plan.candidate.epochs}",
                     proc.stderr)  # the last run's bar, from the progress its child job forwarded
    done = adaptor.get_job(parent.job_id)
    assert f"result: DONE accuracy {done.result.accuracy:.1f}% in {done.result.seconds:.1f} worker-seconds" in proc.stdout
    winner = [c for c in done.child_job_ids if c.startswith(f"asha-watch-s{stages - 1}")][0]
    assert f"winner: stage {stages}, run 1/1 (job {winner})" in proc.stdout
    assert f"nasoa-submit download {parent.job_id}" in proc.stdout
    assert f"over {len(done.child_job_ids)} child jobs of the 120s budget" in proc.stdout

    record = json.loads(nasoa_submit("watch", parent.job_id, "--json", address=address).stdout)
    assert record["state"] == "DONE" and len(record["children"]) == len(done.child_job_ids)
    assert record["plan"]["staged"] is True and record["result"]["artifact_id"] == done.result.artifact_id


def test_fit_progress_follows_each_run_of_a_staged_job(staged_served, capsys):
    """nasoa.fit's epoch bar (tqdm) over the forwarded progress of a staged job's runs."""
    from nasoa._fit import _tqdm_progress
    from nasoa_contracts import JobEvent

    adaptor, _ = staged_served
    plan = adaptor.recommend(_task(120))
    on_event = _tqdm_progress(plan)
    last = len(plan.stages)
    events = [JobEvent("p", 1, "state", JobState.RUNNING, f"stage 1 of {last}: 9 runs queued"),
              JobEvent("p", 2, "progress", JobState.RUNNING, "stage 1, run 2/9: epoch 1", 1, 50.0, 1.0),
              JobEvent("p", 3, "progress", JobState.RUNNING, f"stage {last}: epoch 2", 2, 60.0, 2.0),
              JobEvent("p", 4, "progress", JobState.RUNNING, f"stage {last}: epoch {plan.candidate.epochs}",
                       plan.candidate.epochs, 70.0, 3.0),
              JobEvent("p", 5, "result", JobState.DONE, "winner p-s2r0")]
    for event in events:
        on_event(event)
    captured = capsys.readouterr()
    err = captured.out + captured.err  # tqdm writes a line to stdout before its bar exists
    assert f"stage 1 of {last}: 9 runs queued" in err and "stage 1, run 2/9" in err
    assert f"stage {last}: " in err and f"{plan.candidate.epochs}/{plan.candidate.epochs}" in err
    assert "[DONE] winner p-s2r0" in err
