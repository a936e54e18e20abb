"""The result of a finished job, kept: manifest, safetensors weights, sha256, upload.

A job that stopped as planned (``stop_after_epochs``) also uploads its training checkpoint,
``checkpoint.safetensors``, named in the manifest; a job that resumes a run fetches that
checkpoint by the earlier job's id (:func:`fetch_training_checkpoint`), from any machine.

Called by the runner after fine-tuning and before the result is reported, so a job whose
result the adaptor records always has its model in the store.  A redelivered job (the worker
died after the upload, before the result was acknowledged) finds its artifact in the store
and reports the stored result instead of training a second model: one artifact per job.

``NASOA_TEST_PAUSE_AFTER_UPLOAD`` (seconds; tests only) holds the worker between the upload
and the report, so a test can kill it there.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clients import MANIFEST_FORMAT, ArtifactClient, StoredArtifact, manifest_bytes
from nasoa_contracts import CurvePoint, Job, Observation, WorkerSettings, make_channel
from zoo_store import ARTIFACT_FILES, TRAINING_CHECKPOINT_FILE

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from worker._checkpoints import TrainingCheckpoint
    from worker._finetune import EpochProgress, FinetuneResult, FinetuneSpec

__all__ = [
    "CheckpointUnavailable",
    "artifact_reserve_seconds",
    "build_manifest",
    "deliver",
    "fetch_training_checkpoint",
    "job_curve",
    "keep_model",
    "recover",
    "result_status",
]

log = logging.getLogger("nasoa.worker.artifacts")

SPLIT_RULE = (
    "train/validation/test are seeded and disjoint; validation is a seeded, class-balanced 20% of the "
    "training pool (or the folder's val/ beside test/); epochs and weights are chosen on validation only, "
    "the test split is scored once on the weights kept"
)
WEIGHTS, MANIFEST = ARTIFACT_FILES
_VERSIONED = ("torch", "torchvision", "safetensors", "numpy", "nasoa")


# A training checkpoint holds the current and the best weights and up to two optimiser
# moments per trained weight: at most four times the weights, beside the model itself.
CHECKPOINT_WEIGHT_MULTIPLE = 4


class CheckpointUnavailable(RuntimeError):
    """The training checkpoint a job resumes from cannot be had (missing, damaged, another run)."""


def artifact_reserve_seconds(model: nn.Module, with_checkpoint: bool = False) -> float:
    """Seconds kept back from the fine-tune's deadline for saving and uploading the model (and
    the training checkpoint, ``with_checkpoint``), so the whole job fits its budget: a fixed
    part for the calls, and the bytes at 30 MB/s (below what the CPU machine measured under
    load, docs/BENCHMARKS.md)."""
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 0.25 + weight_bytes * (1 + CHECKPOINT_WEIGHT_MULTIPLE * with_checkpoint) / 30e6


def result_status(result: FinetuneResult) -> str:
    """``deadline``, ``stopped`` (as planned, with a training checkpoint) or ``ok``."""
    if result.stopped_by_deadline:
        return "deadline"
    return "stopped" if result.checkpoint is not None else "ok"


def job_curve(result: FinetuneResult, offset: float) -> tuple[EpochProgress, ...]:
    """The run's curve as the job reports it: the epochs this job trained shifted by ``offset``
    (the job's seconds before fine-tuning began); a resumed run's earlier epochs as they were."""
    return tuple(p if p.epoch <= result.resumed_epochs else replace(p, seconds=p.seconds + offset)
                 for p in result.curve)  # fmt: skip


def fetch_training_checkpoint(settings: WorkerSettings, job_id: str) -> TrainingCheckpoint:
    """The training checkpoint stored by job ``job_id``, through the artifact store (no shared
    disk); :class:`CheckpointUnavailable`, in one line, when it is missing or damaged."""
    from worker._checkpoints import TrainingCheckpoint
    from zoo_store import ArtifactNotFound, ChecksumMismatch

    scratch = settings.cache_dir / "resume"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="job-") as tmp:
        try:
            with ArtifactClient(settings.zoo_address, timeout=settings.rpc_timeout) as store:
                path = store.download_training_checkpoint(job_id, tmp)
            return TrainingCheckpoint.from_bytes(path.read_bytes())
        except (ArtifactNotFound, ChecksumMismatch, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise CheckpointUnavailable(f"cannot resume the run of job {job_id!r}: {reason}") from None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def build_manifest(job: Job, entry: Any, spec: FinetuneSpec, result: FinetuneResult, offset: float) -> dict[str, Any]:
    """Everything needed to use and to judge the model, without the weights' sha256 yet."""
    from nasoa_data import normalisation

    candidate = job.plan.candidate
    mean, std = normalisation(3)
    train, validation, test = result.split_sizes
    return {
        "format": MANIFEST_FORMAT,
        "job_id": job.job_id,
        "created_at": time.time(),
        "dataset": {"uri": result.dataset_uri, "submitted_uri": job.task.dataset_uri, "seed": spec.seed,
                    "splits": {"train": train, "validation": validation, "test": test}, "split_rule": SPLIT_RULE},
        "base_model": entry.to_dict(),
        "classes": list(result.class_names),
        "preprocessing": {
            "input_size": spec.image_size, "channels": 3, "mean": list(mean), "std": list(std),
            "steps": "decode as RGB (grey repeated); resize to input_size x input_size (bilinear, antialiased) "
                     "if needed; (pixel - 255*mean) / (255*std) per channel",
        },
        "plan": {"model": candidate.model, "epochs": candidate.epochs, "hparams": dict(candidate.hparams),
                 "policy": job.plan.policy, "budget_seconds": job.task.budget_seconds,
                 "predicted_accuracy": job.plan.prediction.accuracy, "predicted_seconds": job.plan.prediction.seconds,
                 "stop_after_epochs": job.stop_after_epochs, "resume_from_job_id": job.resume_from_job_id},
        "curve": [{"epoch": p.epoch, "accuracy": p.accuracy, "seconds": p.seconds} for p in job_curve(result, offset)],
        "validation_accuracy": result.validation_accuracy,
        "best_epoch": result.best_epoch,
        "test_accuracy": result.accuracy,
        "epochs_completed": result.epochs_completed,
        "status": result_status(result),
        "seconds": result.seconds + offset,
        "versions": _versions(),
    }  # fmt: skip


def deliver(settings: WorkerSettings, job: Job, model: nn.Module, manifest: dict[str, Any],
            checkpoint: TrainingCheckpoint | None = None) -> StoredArtifact:  # fmt: skip
    """Save the weights (and the training checkpoint) and the manifest locally, upload them,
    commit; returns the stored artifact."""
    from zoo_store import atomic_write_bytes, save_safetensors

    scratch = settings.cache_dir / "artifacts"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="job-") as tmp:
        folder = Path(tmp)
        sha, size = save_safetensors(model.state_dict(), folder / WEIGHTS)
        files = {WEIGHTS: {"sha256": sha, "size": size}}
        if checkpoint is not None:
            checkpoint_sha, checkpoint_size = atomic_write_bytes(folder / TRAINING_CHECKPOINT_FILE, checkpoint.to_bytes())
            files[TRAINING_CHECKPOINT_FILE] = {"sha256": checkpoint_sha, "size": checkpoint_size}
        manifest = {**manifest, "files": files}
        manifest_sha, _ = atomic_write_bytes(folder / MANIFEST, manifest_bytes(manifest))
        with ArtifactClient(settings.zoo_address, timeout=settings.rpc_timeout) as store:
            stored = store.upload(job.job_id, folder / WEIGHTS, folder / MANIFEST, job_created_at=job.created_at,
                                  sha256={name: f["sha256"] for name, f in files.items()} | {MANIFEST: manifest_sha},
                                  checkpoint=folder / TRAINING_CHECKPOINT_FILE if checkpoint else None)  # fmt: skip
    log.info("artifact %s of job %s uploaded (%d bytes)%s", stored.artifact_id, job.job_id, stored.size_bytes,
             " (already stored by an earlier delivery)" if stored.existed else "")  # fmt: skip
    pause = float(os.environ.get("NASOA_TEST_PAUSE_AFTER_UPLOAD", "0") or 0)
    if pause > 0:
        log.warning("pausing %.0f s after the upload (NASOA_TEST_PAUSE_AFTER_UPLOAD)", pause)
        time.sleep(pause)
    return stored


def keep_model(settings: WorkerSettings, job: Job, model: nn.Module, spec: FinetuneSpec, result: FinetuneResult,
               offset: float) -> StoredArtifact:  # fmt: skip
    """Manifest (with the zoo entry of the base model), save and upload: the runner's one call.

    The training checkpoint of a run stopped as planned goes with it, its curve as the job
    reported it, so that the job that continues the run continues that curve."""
    from zoo_store import get_remote_entry

    with make_channel(settings.zoo_address) as channel:
        entry = get_remote_entry(channel, job.plan.candidate.model, timeout=settings.rpc_timeout)
    checkpoint = result.checkpoint and replace(result.checkpoint, curve=job_curve(result, offset))
    return deliver(settings, job, model, build_manifest(job, entry, spec, result, offset), checkpoint)


def observation_from_manifest(job: Job, stored: StoredArtifact, manifest: dict[str, Any], message: str) -> Observation:
    return Observation(
        job_id=job.job_id, task=job.task, candidate=job.plan.candidate,
        accuracy=float(manifest["test_accuracy"]), seconds=float(manifest["seconds"]),
        curve=tuple(CurvePoint(int(p["epoch"]), float(p["accuracy"]), float(p["seconds"])) for p in manifest["curve"]),
        status=str(manifest["status"]), message=message,
        artifact_id=stored.artifact_id, artifact_sha256=stored.sha256,
    )  # fmt: skip


def recover(settings: WorkerSettings, job: Job, stored: StoredArtifact | None = None) -> Observation | None:
    """The job's result from its stored artifact, when an earlier delivery stored one."""
    import json

    from zoo_store import ArtifactNotFound

    with ArtifactClient(settings.zoo_address, timeout=settings.rpc_timeout) as store:
        if stored is None:
            try:
                stored = store.get(job_id=job.job_id)
            except ArtifactNotFound:
                return None
        manifest = json.loads(store.read_bytes(stored, MANIFEST))
    log.info("job %s already has artifact %s: reporting its stored result", job.job_id, stored.artifact_id)
    return observation_from_manifest(job, stored, manifest, f"result of artifact {stored.artifact_id}, stored by an "
                                                            "earlier delivery of this job")  # fmt: skip
