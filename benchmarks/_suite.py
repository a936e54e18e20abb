"""The generalisation suite (``nasoa-bench replay --suite``): one replay per variant of the data.

Variants (a) to (e) are QuickTune-extended transformed, each into a shape common in public
tables of fine-tuning runs; (f) is the table ``nasoa-bench collect`` made from real runs over
the default zoo on the built-in data; ``synthetic`` is a seeded table of known structure whose
oracle is exact (``_synthetic.py``). Each variant is replayed with the same protocol
(``run_replay``); the suite reports, per variant, the warm first-visit regret of NASOA, the
cold-start regret, best-prior's, random's, and the searches', and whether the goals hold.

Budgets: QuickTune's variants use the replay's default budgets (0.5 h, 1 h, 4 h, 16 h); a table
of other time scales uses the 10th, 30th, 60th and 90th percentiles of its runs' total seconds
(two significant digits), so each budget admits a different share of the runs.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptor_service import ExperienceRun, ExperienceTable
from benchmarks._replay import DEFAULT_BUDGETS_SECONDS, load_named_table, run_replay
from benchmarks._replay_results import ReplayResult, save_figure
from benchmarks._synthetic import synthetic_table
from nasoa_contracts import CurvePoint

__all__ = ["COLLECTED_TABLE", "VARIANTS", "SuiteRow", "model_family", "run_suite", "table_budgets"]

#: The table of variant (f): ``nasoa-bench collect`` over the default zoo, 10 built-in tasks.
COLLECTED_TABLE = Path(__file__).resolve().parent / "data" / "experience-collect200.jsonl"


def model_family(model: str) -> str:
    """A model's family: its name's first word without version digits (``deit3_small`` -> ``deit``).

    >>> model_family("deit3_small_patch16_384"), model_family("mobilevitv2_075"), model_family("dla46x_c")
    ('deit', 'mobilevit', 'dla')
    """
    return re.sub(r"v?\d.*$", "", model.split("_")[0]) or model


def final_epoch_only(table: ExperienceTable) -> ExperienceTable:
    """(a) Each run keeps one row: its final epoch."""
    return _replace(table, lambda r: _run(r, curve=(r.curve[-1],)))


def anonymise_models(table: ExperienceTable, seed: int = 0) -> ExperienceTable:
    """(b) Model names replaced by opaque labels (seeded order), so nothing links them to a zoo profile."""
    names = sorted({r.model for r in table.runs})
    random.Random(seed).shuffle(names)
    label = {name: f"model-{i:03d}" for i, name in enumerate(names)}
    return _replace(table, lambda r: _run(r, model=label[r.model]))


def size_and_classes_only(table: ExperienceTable) -> ExperienceTable:
    """(c) Meta-features reduced to ``num_samples`` and ``num_classes``."""
    keep = ("num_samples", "num_classes")
    return _replace(table, lambda r: _run(r, meta={k: r.meta[k] for k in keep if k in r.meta}))


def scale_task_times(table: ExperienceTable, seed: int = 0, low: float = 0.1, high: float = 10.0) -> ExperienceTable:
    """(d) Each task's seconds multiplied by a factor drawn log-uniformly in [low, high] (seeded)."""
    rng = random.Random(seed)
    factor = {t: math.exp(rng.uniform(math.log(low), math.log(high))) for t in sorted(table.task_ids)}
    return _replace(table, lambda r: _run(r, curve=tuple(CurvePoint(p.epoch, p.accuracy, p.seconds * factor[r.task_id])
                                                         for p in r.curve)))


def _run(run: ExperienceRun, **changes: object) -> ExperienceRun:
    fields = {"task_id": run.task_id, "run_id": run.run_id, "model": run.model, "meta": run.meta,
              "hparams": run.hparams, "curve": run.curve, **changes}
    return ExperienceRun(**fields)  # type: ignore[arg-type]


def _replace(table: ExperienceTable, change: Callable[[ExperienceRun], ExperienceRun]) -> ExperienceTable:
    return ExperienceTable(tuple(change(r) for r in table.runs), table.name)


def table_budgets(table: ExperienceTable) -> list[float]:
    """The 10th, 30th, 60th and 90th percentiles of the runs' total seconds, two significant digits."""
    totals = np.array([r.total_seconds for r in table.runs])
    return sorted({float(f"{q:.2g}") for q in np.percentile(totals, [10, 30, 60, 90])})


@dataclass(frozen=True)
class Variant:
    """A table (built lazily) and how to replay it."""

    description: str
    build: Callable[[], ExperienceTable]
    quicktune_budgets: bool = True
    leave_family_out: bool = False


def _quicktune() -> ExperienceTable:
    return load_named_table("quicktune-extended")


VARIANTS: dict[str, Variant] = {
    "a-final-epoch": Variant("QuickTune-extended, final epoch only (one row per run)",
                             lambda: final_epoch_only(_quicktune())),
    "b-anonymous": Variant("QuickTune-extended, model names anonymised", lambda: anonymise_models(_quicktune())),
    "c-size-classes": Variant("QuickTune-extended, meta-features num_samples and num_classes only",
                              lambda: size_and_classes_only(_quicktune())),
    "d-time-scaled": Variant("QuickTune-extended, each task's times scaled by a log-uniform factor in [0.1, 10]",
                             lambda: scale_task_times(_quicktune())),
    "e-family-out": Variant("QuickTune-extended, the largest model family left out of the warm start",
                            _quicktune, leave_family_out=True),
    "f-collected": Variant("nasoa-bench collect: real runs over the default zoo on built-in data",
                           lambda: load_named_table(COLLECTED_TABLE), quicktune_budgets=False),
    "synthetic": Variant("seeded synthetic table: one row per run, 40 anonymous models, times 100x apart, "
                         "num_samples and num_classes only; exact oracle", synthetic_table, quicktune_budgets=False),
}


@dataclass(frozen=True)
class SuiteRow:
    """One variant's figures: mean first-visit regret over the budgets, and the goals."""

    variant: str
    description: str
    n_tasks: int
    n_runs: int
    budgets_seconds: tuple[float, ...]
    nasoa_warm: float
    nasoa_cold: float
    best_prior: float
    random: float
    oracle_accuracy: float
    tpe: float
    hyperband: float
    accuracy_at_least_best_prior: bool  # NASOA warm mean accuracy >= best-prior's at every budget
    left_out_family: str
    infeasible_requests: int
    seconds: float

    @property
    def goals_met(self) -> bool:
        return (self.nasoa_warm <= self.best_prior + 1e-9 and self.nasoa_warm <= self.random - 10
                and self.accuracy_at_least_best_prior)


def _row(name: str, variant: Variant, result: ReplayResult, family: str) -> SuiteRow:
    budgets = [float(b) for b in result.config["budgets_seconds"]]  # type: ignore[attr-defined]

    def first_visit(policy: str, stream: str = "warm") -> float:
        return result.summary(policy, stream).first_visit_regret

    def search(name: str) -> float:
        vals = [s.mean_regret for s in result.searches if s.search == name]
        return float(np.mean(vals)) if vals else math.nan

    accuracy_ok = all(
        result.summary("nasoa", "warm", b).mean_accuracy >= result.summary("best-prior", "warm", b).mean_accuracy - 1e-9
        for b in budgets if any(s.budget_seconds == b and s.policy == "nasoa" for s in result.summaries)
    )
    return SuiteRow(
        name, variant.description, int(result.config["n_tasks"]), int(result.config["n_runs"]),  # type: ignore[call-overload]
        tuple(budgets), first_visit("nasoa"), result.summary("nasoa", "cold").mean_regret, first_visit("best-prior"),
        first_visit("random"), result.summary("oracle", "warm").mean_accuracy, search("tpe"), search("hyperband"),
        accuracy_ok, family, len(result.config.get("infeasible_requests", [])),  # type: ignore[arg-type]
        float(result.timings["total"]),
    )


def run_suite(
    variants: Sequence[str] | None = None,
    orders: int = 1,
    seed: int = 0,
    folds: int = 5,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] = print,
) -> list[SuiteRow]:
    """Replay each variant (all by default); write per-variant tables, ``suite.jsonl`` and ``suite.png``."""
    names = list(variants or VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown suite variants {unknown}: choose among {', '.join(VARIANTS)}")
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        variant = VARIANTS[name]
        table = variant.build()
        budgets = list(DEFAULT_BUDGETS_SECONDS) if variant.quicktune_budgets else table_budgets(table)
        family = ""
        exclude = None
        if variant.leave_family_out:
            family = Counter(model_family(r.model) for r in table.runs).most_common(1)[0][0]
            exclude = lambda run, family=family: model_family(run.model) == family  # noqa: E731
        progress(f"suite: {name} ({len(table.runs)} runs, budgets {budgets})")
        result = run_replay(table, budgets, orders=orders, seed=seed, folds=min(folds, len(table.task_ids)),
                            warm_exclude=exclude, progress=progress)
        row = _row(name, variant, result, family)
        rows.append(row)
        progress(format_suite([row]))
        if out:
            (out / f"{name}.txt").write_text(result.format_table() + "\n")
            with open(out / "suite.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(_json_row(row)) + "\n")
    if out:
        save_suite_png(rows, out / "suite.png")
    return rows


def _json_row(row: SuiteRow) -> dict[str, object]:
    data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.__dict__.items()}
    data["goals_met"] = row.goals_met
    return data


def format_suite(rows: Sequence[SuiteRow]) -> str:
    """One line per variant: mean warm first-visit regret of each policy (points) and the goals."""
    head = (f"{'variant':<15} {'tasks':>5} {'runs':>5} {'NASOA':>6} {'cold':>6} {'b-prior':>7} {'random':>6} "
            f"{'oracle%':>7} {'TPE':>6} {'HB':>6} {'acc>=bp':>7} {'goals':>5}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.variant:<15} {r.n_tasks:>5} {r.n_runs:>5} {r.nasoa_warm:>6.1f} {r.nasoa_cold:>6.1f} "
            f"{r.best_prior:>7.1f} {r.random:>6.1f} {r.oracle_accuracy:>7.1f} {r.tpe:>6.1f} {r.hyperband:>6.1f} "
            f"{'yes' if r.accuracy_at_least_best_prior else 'no':>7} {'yes' if r.goals_met else 'no':>5}"
        )
    return "\n".join(lines)


def save_suite_png(rows: Sequence[SuiteRow], path: str | Path) -> Path:
    """Grouped bars: warm first-visit regret of NASOA, best-prior and random, and NASOA cold, per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("NASOA warm", "nasoa_warm"), ("best-prior", "best_prior"), ("random", "random"),
              ("NASOA cold", "nasoa_cold")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    width = 0.8 / len(series)
    x = np.arange(len(rows))
    for i, (label, attr) in enumerate(series):
        ax.bar(x + i * width, [getattr(r, attr) for r in rows], width, label=label)
    ax.set_xticks(x + width * (len(series) - 1) / 2, [r.variant for r in rows], rotation=20)
    ax.set_ylabel("regret to the oracle, points (first visits; cold: all)")
    ax.set_title("generalisation suite: warm first-visit regret per variant")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
