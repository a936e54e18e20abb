"""``nasoa-submit``'s live view of a job (rich progress), and the check for idle queues."""

from __future__ import annotations

import queue
import re
import threading
import time
from typing import Any

__all__ = ["Follower", "NoWorker", "warn_without_workers"]

PROG = "nasoa-submit"
# How a staged job's stream names the child run an epoch came from: "stage 1, run 2/4: epoch 3",
# or "stage 2: epoch 5" for a stage of one run.
CHILD_PROGRESS = re.compile(r"stage (\d+)(?:, run (\d+)/(\d+))?: epoch")


class NoWorker(ConnectionError):
    """No worker consumed the job's queue within the grace period."""


class Follower:
    """Live progress of one job: a state line per change, an epoch bar and a budget bar.

    Events are read on a thread so that the display stays alive while the job waits in its
    queue, and so that a queue nobody consumes is noticed after ``grace`` seconds. A staged
    job shows its stage lines and an epoch bar per run of the current stage, from the
    progress its child jobs forward.
    """

    def __init__(self, client: Any, job: Any, console: Any, show: bool, grace: float | None) -> None:
        self.client, self.job, self.console, self.show, self.grace = client, job, console, show, grace
        self.events: queue.Queue[Any] = queue.Queue()
        self._run_bars: dict[tuple[int, int], Any] = {}  # (stage, run) -> its progress bar

    def _read(self, timeout: float) -> None:
        try:
            for event in self.client.events(self.job.job_id, timeout=timeout):
                self.events.put(event)
            self.events.put(None)
        except BaseException as exc:  # handed to the main thread, which raises it
            self.events.put(exc)

    def run(self, timeout: float) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        threading.Thread(target=self._read, args=(timeout,), daemon=True, name="watch").start()
        columns = (SpinnerColumn(), TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[note]}"), TimeElapsedColumn())
        started = time.monotonic()
        state = self.job.state.value
        with Progress(*columns, console=self.console, disable=not self.show, transient=False) as bars:
            status = bars.add_task(state.lower(), total=None, note="waiting for a worker")
            epochs = None
            budget = round(self.job.task.budget_seconds)
            while True:
                try:
                    event = self.events.get(timeout=0.5)
                except queue.Empty:
                    waiting = state == "QUEUED" or (self.job.plan.staged and not self._run_bars)  # no run began
                    if waiting and self.grace is not None and time.monotonic() - started > self.grace:
                        self._check_workers()
                        self.grace = None  # asked once
                    continue
                if event is None:
                    break
                if isinstance(event, BaseException):
                    raise event
                state = event.state.value
                if event.kind == "progress" and self.job.plan.staged:
                    bars.update(status, visible=False)  # the runs' bars tell the progress
                    self._child_progress(bars, event)
                elif event.kind == "progress":
                    if epochs is None:
                        epochs = bars.add_task("epochs", total=self.job.plan.candidate.epochs, note="")
                        bars.update(status, visible=False)
                        time_bar = bars.add_task("budget s", total=budget, note="")
                    bars.update(epochs, completed=event.epoch, note=f"accuracy {event.accuracy:.1f}%")
                    bars.update(time_bar, completed=min(round(event.seconds), budget), note="")
                else:
                    if self.show and event.message:
                        bars.console.print(f"[{state}] {event.message}", markup=False)
                    bars.update(status, description=state.lower(), note="")
        return self.client.job(self.job.job_id)

    def _child_progress(self, bars: Any, event: Any) -> None:
        """An epoch of one child run: its bar (earlier stages' bars make way for the current stage's)."""
        match = CHILD_PROGRESS.search(event.message)
        if match is None:
            if self.show and event.message:
                bars.console.print(f"[{event.state.value}] {event.message}", markup=False)
            return
        stage, run, runs = int(match[1]), int(match[2] or 1), int(match[3] or 1)
        runs_bars = self._run_bars
        key = (stage, run)
        if key not in runs_bars:
            for (earlier, _), task in runs_bars.items():
                if earlier < stage:
                    bars.update(task, visible=False)
            stages = self.job.plan.stages
            plan_stage = stages[stage - 1] if 0 < stage <= len(stages) else None
            total = None
            if plan_stage is not None and plan_stage.runs:
                total = plan_stage.stop_after_epochs or plan_stage.runs[min(run, len(plan_stage.runs)) - 1].epochs
            runs_bars[key] = bars.add_task(f"stage {stage} run {run}/{runs}", total=total, note="")
        bars.update(runs_bars[key], completed=event.epoch, note=f"accuracy {event.accuracy:.1f}%")

    def _check_workers(self) -> None:
        from nasoa import broker_name, queue_consumers

        device = self.job.task.device_class
        if queue_consumers(device) == []:
            raise NoWorker(
                f"job {self.job.job_id} is still QUEUED after {self.grace:.0f}s and no worker consumes the "
                f"{device} queue on {broker_name()}: start one with `nasoa-worker --device {device}` "
                "(the job stays queued)"
            )


def warn_without_workers(device: str, console: Any) -> None:
    from nasoa import broker_name, queue_consumers

    if queue_consumers(device) == []:
        console.print(f"{PROG}: warning: no worker consumes the {device} queue on {broker_name()} yet; the job "
                      f"waits until one starts (`nasoa-worker --device {device}`)", markup=False)
