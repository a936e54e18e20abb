"""A scheduler that embeds NASOA's plain-Python ``Adaptor`` and runs the jobs itself.

For each request of a stream, the adaptor plans (model, regime, epochs) within the budget;
the scheduler fine-tunes that plan in this process with real PyTorch (the zoo's pretrained
checkpoint, ``worker.run_finetune``) and reports the result, which the adaptor learns before
the next request. No gRPC, no broker, no zoo service.

    python examples/embedded_scheduler.py --requests 4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from adaptor_service import Adaptor, CandidateSpace, ModelInfo, RegimeGrid, open_store
from nasoa_contracts import CurvePoint, Observation, TaskSpec

STREAM = [("builtin:digits", 8.0), ("builtin:shapes?train=600&test=200", 8.0), ("builtin:digits", 12.0),
          ("builtin:shapes?train=600&test=200", 12.0)]


def zoo_candidates(limit: int | None = None) -> CandidateSpace:
    """The default zoo's models (the ``limit`` fastest on the CPU) with a small grid of regimes.

    The shipped experience table that warms the adaptor up names models of the whole zoo, and
    a warm start refuses runs of models the candidate space does not have.
    """
    import zoo_store

    entries = sorted((zoo_store.get_entry(n) for n in zoo_store.list_models()),
                     key=lambda e: e.step_time_ms.get("cpu", float("inf")))[:limit]
    models = [ModelInfo(e.name, dict(e.step_time_ms), e.step_batch_size, e.num_params, e.macs,
                        e.source_accuracy, e.num_stages or 1) for e in entries]
    grid = RegimeGrid(epochs=(1, 2, 4), learning_rates=(0.01, 0.05), batch_sizes=(64,), frozen_stages=(0,),
                      optimizers=("sgd",))
    return CandidateSpace(models, grid)


def run_plan(task: TaskSpec, candidate, job_id: str, progress: Callable | None = None) -> Observation:  # noqa: ANN001
    """Fine-tune the planned candidate here, under the task's budget, and describe the outcome.

    ``progress(job_id, CurvePoint)`` is called after every epoch.
    """
    import zoo_store
    from worker import FinetuneSpec, run_finetune

    hp = candidate.hparams
    model = zoo_store.create_model(candidate.model, pretrained=True)
    spec = FinetuneSpec(task.dataset_uri, epochs=candidate.epochs, lr=float(hp["lr"]),
                        batch_size=int(hp["batch_size"]), frozen_stages=int(hp["frozen_stages"]),
                        optimizer=str(hp["optimizer"]), deadline_seconds=task.budget_seconds, num_threads=1)
    on_epoch = None if progress is None else (lambda p: progress(job_id, CurvePoint(p.epoch, p.accuracy, p.seconds)))
    result = run_finetune(spec, model, progress=on_epoch)
    curve = tuple(CurvePoint(p.epoch, p.accuracy, p.seconds) for p in result.curve)
    return Observation(job_id, task, candidate, result.accuracy, result.seconds, curve,
                       "deadline" if result.stopped_by_deadline else "ok")


def warm_start(adaptor: Adaptor) -> None:
    """Learn the experience table shipped with NASOA (past runs on other subsets of the built-ins)."""
    from adaptor_service import SHIPPED_EXPERIENCE, warm_start_from_file

    warm_start_from_file(adaptor, SHIPPED_EXPERIENCE)


def schedule(requests: list[tuple[str, float]], submit: Callable, report: Callable,
             progress: Callable | None = None) -> list[tuple[str, float, float]]:
    """The scheduler loop: plan (``submit``), run, report; returns (plan, predicted, actual) per request."""
    from nasoa_data import compute_meta_features

    rows = []
    for i, (dataset, budget) in enumerate(requests, start=1):
        task = TaskSpec(dataset, budget, compute_meta_features(dataset).as_dict())
        job = submit(task, f"example-{i}")
        candidate = job.plan.candidate
        observation = run_plan(task, candidate, job.job_id, progress)
        report(observation)
        predicted = job.plan.prediction.accuracy
        plan = f"{candidate.model} {candidate.epochs} epochs lr {candidate.hparams['lr']}"
        print(f"{i:2d} {dataset:36s} {budget:4.0f}s  {plan:32s} predicted {predicted:5.1f}% "
              f"in {job.plan.prediction.seconds:4.1f}s, got {observation.accuracy:5.1f}% in {observation.seconds:4.1f}s",
              flush=True)
        rows.append((job.plan.candidate.describe(), predicted, observation.accuracy))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=len(STREAM), help="how many requests of the stream to run")
    args = parser.parse_args(argv)
    adaptor = Adaptor(open_store("sqlite:///:memory:"), zoo_candidates())
    warm_start(adaptor)
    # Without a dispatcher, submit stores and plans the job; this scheduler runs it.
    rows = schedule(STREAM[: args.requests], submit=lambda task, job_id: adaptor.submit(task, job_id=job_id),
                    report=adaptor.observe)
    stats = adaptor.stats()
    print(f"adaptor: {stats.observations} results learned (48 from the shipped table), "
          f"accuracy MAE {stats.accuracy_mae:.1f} points")
    return 0 if len(rows) == args.requests and stats.observations == 48 + args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
