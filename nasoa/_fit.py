"""``nasoa.fit``: one call from a dataset and a budget to a fine-tuned model.

Without an address, ``fit`` runs on a single-machine cluster that this Python process starts
on first use and stops at exit (``clients.LocalCluster``: the zoo service, the adaptor and
one worker as child processes, the embedded broker, SQLite, state under
``$NASOA_HOME/local``), whose adaptor learns the shipped experience table at its first
start. With an address, it uses the service there.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from clients import LocalCluster
    from nasoa_contracts import JobEvent, Plan

__all__ = ["fit", "leaderboard", "local_cluster"]

_cluster: LocalCluster | None = None
_cluster_lock = threading.Lock()


def local_cluster(home: str | os.PathLike[str] | None = None, start_timeout: float = 180.0) -> LocalCluster:
    """This process's single-machine cluster, started on first use and stopped at exit."""
    global _cluster
    from adaptor_service import SHIPPED_EXPERIENCE
    from clients import LocalCluster

    with _cluster_lock:
        if _cluster is None:
            from nasoa_contracts import ClientSettings, load_settings

            root = Path(home) if home else load_settings(ClientSettings).home / "local"
            root.mkdir(parents=True, exist_ok=True)
            cluster = LocalCluster(
                root, broker_url="", warm_start=SHIPPED_EXPERIENCE,
                env={"NASOA_STORE_URL": f"sqlite:///{root.resolve() / 'adaptor.db'}"},
            )
            cluster.start(timeout=start_timeout)
            atexit.register(_stop_cluster)
            _cluster = cluster
        return _cluster


def _stop_cluster() -> None:
    global _cluster
    with _cluster_lock:
        if _cluster is not None:
            _cluster.stop()
            _cluster = None


def _tqdm_progress(plan: Plan) -> Callable[[JobEvent], None]:
    """Prints the job's state changes and an epoch bar (tqdm) on stderr.

    A staged plan's bar follows the run whose epoch came last ("stage 1, run 2/4"), over the
    epochs that run trains in its stage.
    """
    from tqdm.auto import tqdm

    bar: list[Any] = []
    current = [""]

    def on_event(event: JobEvent) -> None:
        if event.kind == "progress":
            run, total = "epochs", plan.candidate.epochs
            if plan.staged:
                run = event.message.split(":")[0] or "epochs"
                stage = int(run.split()[1].rstrip(",")) - 1 if run.startswith("stage ") else len(plan.stages) - 1
                stage_plan = plan.stages[min(max(stage, 0), len(plan.stages) - 1)]
                total = stage_plan.stop_after_epochs or plan.candidate.epochs
            if not bar:
                bar.append(tqdm(total=total, desc=run, unit="epoch", leave=True))
            elif run != current[0]:
                bar[0].reset(total=total)
                bar[0].set_description(run)
            current[0] = run
            bar[0].update(event.epoch - bar[0].n)
            bar[0].set_postfix_str(f"accuracy {event.accuracy:.1f}%")
        elif event.message:
            (bar[0].write if bar else tqdm.write)(f"[{event.state.value}] {event.message}")
        if event.state.finished and bar:
            bar[0].close()

    return on_event


def fit(
    dataset: str | os.PathLike[str],
    budget: str | float,
    *,
    address: str | None = None,
    zoo_address: str | None = None,
    models: Sequence[str] = (),
    device: str = "cpu",
    job_id: str = "",
    timeout: float | None = None,
    progress: bool = True,
    home: str | os.PathLike[str] | None = None,
) -> Any:
    """Fine-tune the best predicted model for ``dataset`` within ``budget``; returns a ``FineTuned``.

    ``budget`` is a duration (``"90s"``, ``"2m"``) or seconds. ``address``: the adaptor
    service to use (``zoo_address``: its zoo service, which stores the models; default
    ``NASOA_ZOO_ADDRESS``); without one, the single-machine cluster of :func:`local_cluster`
    (state under ``home``). The model is downloaded (sha256-verified) into
    ``$NASOA_HOME/models/<job id>``. Raises ``nasoa.JobFailed`` when the job fails.

    The returned ``FineTuned`` has ``.predict(images)``, ``.save(folder)``, ``.accuracy``
    (test split), ``.plan``, ``.curve``, ``.classes``, ``.model`` and ``.manifest``.
    """
    from clients import load_finetuned
    from nasoa._client import Client, parse_duration

    seconds = parse_duration(budget)
    if address is None:
        cluster = local_cluster(home)
        address, zoo_address = cluster.adaptor_address, cluster.zoo_address
    with Client(address) as client:
        job = client.submit(dataset, seconds, models=models, device=device, job_id=job_id)
        on_event = _tqdm_progress(job.plan) if progress else None
        job = client.wait(job.job_id, timeout=timeout or 4 * seconds + 300, on_event=on_event)
    return load_finetuned(job.job_id, adaptor_address=address, zoo_address=zoo_address)


def leaderboard(address: str | None = None, limit: int = 1000) -> pd.DataFrame:
    """Finished jobs as a pandas DataFrame, best accuracy first.

    ``address`` defaults to this process's local cluster when :func:`fit` started one, else
    to ``NASOA_ADAPTOR_ADDRESS``.
    """
    from nasoa._client import Client

    if address is None and _cluster is not None:
        address = _cluster.adaptor_address
    with Client(address) as client:
        return client.leaderboard(limit=limit)
