"""A seeded synthetic experience table with known structure (``nasoa-bench replay --suite``, variant ``synthetic``).

It has the shape of many public tables and none of QuickTune's: one row per run (its final
epoch only), dozens of models known only by name (no zoo profile), per-task times that differ
by more than 30x, and only ``num_samples`` and ``num_classes`` as meta-features. Outcomes are
deterministic functions of hidden factors, with no noise, so the table is the truth and the
replay's oracle (the best run within the budget) is exact.

Hidden structure: each model has a quality, a preferred learning rate, a speed (seconds per
thousand samples and epoch) and a learning speed; each task a size, a class count and a
difficulty. Accuracy after ``epochs`` is ``100 * sigmoid(quality - difficulty - lr penalty -
log(classes) / 4) * (1 - exp(-epochs / tau))``; seconds are ``speed * samples / 1000 * epochs``
scaled by the batch size.
"""

from __future__ import annotations

import math
import random

from adaptor_service import ExperienceRun, ExperienceTable
from nasoa_contracts import CurvePoint

__all__ = ["synthetic_table"]


def synthetic_table(seed: int = 0, n_tasks: int = 24, n_models: int = 40, runs_per_task: int = 50) -> ExperienceTable:
    """A table of ``n_tasks`` x ``runs_per_task`` single-row runs over ``n_models`` anonymous models."""
    if min(n_tasks, n_models, runs_per_task) < 1:
        raise ValueError("n_tasks, n_models and runs_per_task must be >= 1")
    rng = random.Random(seed)
    models = [
        {
            "name": f"syn-model-{m:02d}",
            "quality": rng.gauss(3.0, 1.0),
            "best_lr": 10 ** rng.uniform(-3.5, -1.5),
            "speed": 10 ** rng.uniform(-0.3, 1.3),  # seconds per 1,000 samples and epoch
            "tau": rng.uniform(2.0, 12.0),  # epochs to reach 63 % of its final accuracy
        }
        for m in range(n_models)
    ]
    runs = []
    for t in range(n_tasks):
        samples = round(10 ** rng.uniform(2.7, 4.7))  # 500 to 50,000: times differ by 100x
        classes = rng.randint(2, 200)
        difficulty = rng.uniform(0.0, 2.0)
        meta = {"num_samples": float(samples), "num_classes": float(classes)}
        task_id = f"syn-task-{t:02d}"
        for r in range(runs_per_task):
            model = rng.choice(models)
            lr = 10 ** rng.uniform(-4.0, -1.0)
            epochs = rng.choice((2, 5, 10, 20, 40))
            batch_size = rng.choice((32, 64, 128))
            penalty = 0.8 * math.log10(lr / model["best_lr"]) ** 2
            logit = model["quality"] - difficulty - penalty - math.log(classes) / 4
            ceiling = 100.0 / (1.0 + math.exp(-logit))
            accuracy = ceiling * (1.0 - math.exp(-epochs / model["tau"]))
            seconds = model["speed"] * samples / 1000.0 * epochs * (64 / batch_size) ** 0.3
            hparams = {"lr": lr, "batch_size": float(batch_size)}
            curve = (CurvePoint(epochs, accuracy, seconds),)
            runs.append(ExperienceRun(task_id, f"run{r:03d}", model["name"], meta, hparams, curve))
    return ExperienceTable(tuple(runs), name=f"synthetic(seed={seed})")
