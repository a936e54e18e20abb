"""Replay benchmark: stream (task, budget) requests over a table of past fine-tuning runs.

Protocol (issue 5, docs/FINDINGS.md, docs/REPLAY.md):

- Tasks are split into ``folds`` seeded folds. For each fold, each learning policy is
  warm-started with every run (curve sampled at epochs 1, 2, 3, 5, 8, 12, 18, 25, 35, 50) of
  the other folds' tasks; then the held-out fold's (task, budget) requests stream in, in
  ``orders`` shuffled orders (the warm-started policy is copied for each order).
- A cold-start stream sends every task's requests to policies that start from nothing.
- For each request a policy sees the meta-features, the budget and the candidate runs
  (model and hyperparameters) and picks one. The outcome is the best validation accuracy the
  run reaches within the budget (cumulative seconds <= budget) and the seconds used; the
  run's curve up to the budget is then observed.
- Search baselines (Optuna TPE, Optuna TPE + Hyperband pruning) search each task's pool one
  run after another; their accuracy at a budget is the best found within that many seconds.
  The compute ratio is the compute a search needs to match NASOA's mean one-shot accuracy,
  divided by the compute NASOA used (its mean seconds), and also by NASOA's budget.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from adaptor_service._experience import ExperienceRun, ExperienceTable, read_table
from benchmarks._policies import (
    AnytimeSearch,
    BestPriorPolicy,
    HpSpace,
    HyperbandSearch,
    NasoaPolicy,
    OraclePolicy,
    Outcome,
    Policy,
    RandomPolicy,
    Request,
    RunOption,
    TPESearch,
    Trajectory,
)

__all__ = [
    "DEFAULT_BUDGETS_SECONDS",
    "ComputeRatio",
    "PolicySummary",
    "ReplayResult",
    "RequestRecord",
    "load_named_table",
    "parse_budget",
    "run_replay",
]

log = logging.getLogger(__name__)

DEFAULT_BUDGETS_SECONDS: tuple[float, ...] = (1800.0, 3600.0, 14400.0, 57600.0)
ONE_SHOT_POLICIES: tuple[str, ...] = ("nasoa", "random", "best-prior", "oracle")
SEARCHES: tuple[str, ...] = ("tpe", "hyperband")


def parse_budget(text: str) -> float:
    """A budget such as ``0.5h``, ``30m``, ``90s`` or ``1800`` as seconds.

    >>> parse_budget("0.5h"), parse_budget("30m"), parse_budget("90s"), parse_budget("12")
    (1800.0, 1800.0, 90.0, 12.0)
    """
    text = text.strip().lower()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    factor = units.get(text[-1:])
    number = text[:-1] if factor is not None else text
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        raise ValueError(f"budget {text!r}: expected a number with h, m or s, e.g. 0.5h") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget {text!r} must be positive")
    return value


def _fmt_budget(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:g}h" if hours >= 0.1 else f"{seconds:g}s"


def _fmt_used(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def load_named_table(path_or_name: str | Path) -> ExperienceTable:
    """A table by file path (.csv/.jsonl), by folder (Quick-Tune layout) or by name.

    Names: ``quicktune`` / ``quicktune-extended`` (the shared copy of Quick-Tune extended).
    """
    from benchmarks._quicktune import load_quicktune

    text = str(path_or_name)
    if text in ("quicktune", "quicktune-extended"):
        return load_quicktune()
    path = Path(text)
    if path.is_dir():
        return load_quicktune(path)
    if not path.exists():
        raise FileNotFoundError(
            f"experience table {text!r} not found: give a .csv/.jsonl path, a Quick-Tune "
            "folder, or the name 'quicktune-extended'"
        )
    return read_table(path)


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class RequestRecord:
    """One policy's answer to one request of a stream."""

    stream: str  # "warm" or "cold"
    order: int
    fold: int
    position: int  # index of the request in its stream (per fold for warm)
    task_id: str
    budget_seconds: float
    first_visit: bool
    policy: str
    run_id: str
    accuracy: float
    seconds: float
    oracle_accuracy: float

    @property
    def regret(self) -> float:
        return self.oracle_accuracy - self.accuracy


@dataclass(frozen=True)
class PolicySummary:
    """Figures of one policy on one stream at one budget (``budget_seconds`` 0: all)."""

    policy: str
    stream: str
    budget_seconds: float
    n: int
    mean_accuracy: float
    mean_regret: float
    first_visit_n: int
    first_visit_regret: float
    repeat_n: int
    repeat_regret: float
    mean_seconds: float


@dataclass(frozen=True)
class SearchSummary:
    """A search baseline at one budget: mean best accuracy found, regret to the oracle."""

    search: str
    budget_seconds: float
    n: int
    mean_accuracy: float
    mean_regret: float
    mean_trials: float


@dataclass(frozen=True)
class ComputeRatio:
    """Compute a search needs to match NASOA's mean one-shot accuracy at a budget.

    ``ratio`` divides it by the compute NASOA used (its mean seconds at that budget: the
    goal's "NASOA's compute"); ``ratio_to_budget`` divides it by the budget itself, which
    NASOA may not have used in full. ``lower_bound`` is True when the search never matched
    NASOA within its horizon; then both are computed from the horizon and read ">= ratio".
    """

    search: str
    budget_seconds: float
    nasoa_accuracy: float
    nasoa_seconds: float
    seconds_needed: float | None
    ratio: float
    ratio_to_budget: float
    lower_bound: bool

    def text(self) -> str:
        return _ratio_text(self.ratio, self.lower_bound)

    def budget_text(self) -> str:
        return _ratio_text(self.ratio_to_budget, self.lower_bound)


def _ratio_text(ratio: float, lower_bound: bool) -> str:
    if not math.isfinite(ratio):
        return "n/a (NASOA used no measured time)"
    return f">= {ratio:.1f}x" if lower_bound else f"{ratio:.1f}x"


@dataclass
class ReplayResult:
    """Everything a replay measured. ``to_json()`` is the ``--json`` output."""

    config: dict[str, object]
    summaries: list[PolicySummary]
    searches: list[SearchSummary]
    compute_ratios: list[ComputeRatio]
    records: list[RequestRecord] = field(repr=False)
    timings: dict[str, float]
    goal_first_visit_regret: float

    def summary(self, policy: str, stream: str, budget_seconds: float = 0.0) -> PolicySummary:
        for s in self.summaries:
            if (s.policy, s.stream, s.budget_seconds) == (policy, stream, budget_seconds):
                return s
        raise KeyError((policy, stream, budget_seconds))

    def to_dict(self, *, with_records: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "config": self.config,
            "goal_first_visit_regret": self.goal_first_visit_regret,
            "summaries": [asdict(s) for s in self.summaries],
            "searches": [asdict(s) for s in self.searches],
            "compute_ratios": [
                {**asdict(c), "text": c.text(), "budget_text": c.budget_text()}
                for c in self.compute_ratios
            ],
            "timings": self.timings,
        }
        if with_records:
            out["records"] = [{**asdict(r), "regret": r.regret} for r in self.records]
        return out

    def to_json(self, *, with_records: bool = False, indent: int | None = 2) -> str:
        return json.dumps(_no_nan(self.to_dict(with_records=with_records)), indent=indent,
                          allow_nan=False, default=_json_default)

    def format_table(self) -> str:
        """The text report: per stream, budget and policy; then searches and compute ratios."""
        budgets = list(self.config["budgets_seconds"])  # type: ignore[call-overload]
        lines = [
            f"replay of {self.config['table']} ({self.config['n_tasks']} tasks, "
            f"{self.config['n_runs']} runs), {self.config['folds']} folds, "
            f"{self.config['orders']} orders, seed {self.config['seed']}",
            "",
            f"{'stream':<6} {'budget':>7} {'policy':<11} {'n':>5} {'acc':>6} {'regret':>7} "
            f"{'1st-visit':>9} {'repeat':>7} {'hours':>6}",
        ]
        for stream in ("warm", "cold"):
            for budget in [*budgets, 0.0]:
                for s in self.summaries:
                    if s.stream != stream or s.budget_seconds != budget:
                        continue
                    label = _fmt_budget(budget) if budget else "mean"
                    lines.append(
                        f"{stream:<6} {label:>7} {s.policy:<11} {s.n:>5} {s.mean_accuracy:>6.1f} "
                        f"{s.mean_regret:>7.1f} {_f(s.first_visit_regret):>9} "
                        f"{_f(s.repeat_regret):>7} {s.mean_seconds / 3600:>6.2f}"
                    )
        if self.searches:
            lines += ["", f"{'search':<10} {'budget':>7} {'n':>4} {'acc':>6} {'regret':>7} {'trials':>7}"]
            for s in self.searches:
                lines.append(
                    f"{s.search:<10} {_fmt_budget(s.budget_seconds):>7} {s.n:>4} "
                    f"{s.mean_accuracy:>6.1f} {s.mean_regret:>7.1f} {s.mean_trials:>7.1f}"
                )
        if self.compute_ratios:
            lines += [
                "",
                "compute a search needs to match NASOA's warm one-shot mean accuracy, over the "
                "compute NASOA used (and over its budget):",
            ]
            for c in self.compute_ratios:
                lines.append(
                    f"  {c.search:<10} at {_fmt_budget(c.budget_seconds):>5}: NASOA "
                    f"{c.nasoa_accuracy:.1f}% in {_fmt_used(c.nasoa_seconds)}, "
                    f"ratio {c.text()} (to the budget {c.budget_text()})"
                )
        lines += [
            "",
            "goal metric (NASOA, warm, first-visit regret averaged over budgets): "
            f"{self.goal_first_visit_regret:.2f} points",
            "timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()),
        ]
        return "\n".join(lines)

    def save_png(self, path: str | Path, window: int = 8) -> Path:
        """Plot regret along the stream (moving average over ``window`` requests)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        streams = [s for s in ("warm", "cold") if any(r.stream == s for r in self.records)]
        fig, axes = plt.subplots(1, len(streams), figsize=(6 * len(streams), 4), squeeze=False)
        for ax, stream in zip(axes[0], streams, strict=True):
            for policy in dict.fromkeys(r.policy for r in self.records):
                recs = [r for r in self.records if r.stream == stream and r.policy == policy]
                if not recs or policy == "oracle":
                    continue
                length = max(r.position for r in recs) + 1
                total = np.zeros(length)
                count = np.zeros(length)
                for r in recs:
                    total[r.position] += r.regret
                    count[r.position] += 1
                mean = total / np.maximum(count, 1)
                kernel = np.ones(min(window, length)) / min(window, length)
                smooth = np.convolve(mean, kernel, mode="valid")
                ax.plot(np.arange(len(smooth)) + (len(kernel) - 1), smooth, label=policy)
            title = "warm start (held-out fold streams)" if stream == "warm" else "cold start"
            ax.set_title(f"{self.config['table']}: {title}")
            ax.set_xlabel("request in the stream")
            ax.set_ylabel(f"regret to oracle, points (moving mean of {window})")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _f(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _no_nan(value: object) -> object:
    """NaN (no request of that kind) and infinities as None, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


# ------------------------------------------------------------------------------ running


PolicyFactory = Callable[[str, int, ExperienceTable, HpSpace], Policy]


def default_policy_factory(name: str, seed: int, table: ExperienceTable, space: HpSpace) -> Policy:
    """Build a one-shot policy by name: nasoa, random, best-prior or oracle."""
    if name == "nasoa":
        return NasoaPolicy(seed=seed)
    if name == "random":
        return RandomPolicy(seed=seed)
    if name == "best-prior":
        return BestPriorPolicy(space, seed=seed)
    if name == "oracle":
        return OraclePolicy(table.runs)
    raise ValueError(f"unknown policy {name!r}: choose from {', '.join(ONE_SHOT_POLICIES)}")


def _make_search(name: str, space: HpSpace) -> AnytimeSearch:
    if name == "tpe":
        return TPESearch(space)
    if name == "hyperband":
        return HyperbandSearch(space)
    raise ValueError(f"unknown search {name!r}: choose from {', '.join(SEARCHES)}")


def _split_folds(task_ids: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    if not 1 <= folds <= len(task_ids):
        raise ValueError(f"folds must be between 1 and the number of tasks ({len(task_ids)}), got {folds}")
    shuffled = sorted(task_ids)
    random.Random(seed).shuffle(shuffled)
    return [sorted(shuffled[i::folds]) for i in range(folds)]


def _options(runs: Sequence[ExperienceRun]) -> tuple[RunOption, ...]:
    return tuple(RunOption(r.run_id, r.model, r.hparams) for r in runs)


def _play(
    stream: str,
    order: int,
    fold: int,
    requests: Sequence[tuple[str, float]],
    policies: Mapping[str, Policy],
    by_task: Mapping[str, tuple[ExperienceRun, ...]],
    oracle: Mapping[tuple[str, float], float],
    records: list[RequestRecord],
) -> None:
    seen: set[str] = set()
    for position, (task_id, budget) in enumerate(requests):
        runs = by_task[task_id]
        request = Request(
            task_id=task_id,
            meta_features=runs[0].meta,
            budget_seconds=budget,
            options=_options(runs),
            first_visit=task_id not in seen,
        )
        seen.add(task_id)
        for name, policy in policies.items():
            choice = policy.choose(request)
            run = runs[choice]
            accuracy, seconds = run.outcome_within(budget)
            outcome = Outcome(run.run_id, accuracy, seconds, run.curve_within(budget))
            policy.observe(request, choice, outcome)
            records.append(
                RequestRecord(
                    stream, order, fold, position, task_id, budget, request.first_visit, name,
                    run.run_id, accuracy, seconds, oracle[(task_id, budget)],
                )
            )


def _summaries(records: Sequence[RequestRecord], budgets: Sequence[float]) -> list[PolicySummary]:
    out = []
    keys = dict.fromkeys((r.stream, r.policy) for r in records)
    for stream, policy in keys:
        mine = [r for r in records if r.stream == stream and r.policy == policy]
        per_budget = []
        for budget in budgets:
            recs = [r for r in mine if r.budget_seconds == budget]
            if not recs:
                continue
            first = [r.regret for r in recs if r.first_visit]
            repeat = [r.regret for r in recs if not r.first_visit]
            summary = PolicySummary(
                policy, stream, budget, len(recs), _mean([r.accuracy for r in recs]),
                _mean([r.regret for r in recs]), len(first), _mean(first), len(repeat),
                _mean(repeat), _mean([r.seconds for r in recs]),
            )
            per_budget.append(summary)
            out.append(summary)
        # "mean" row: average of the per-budget figures (each budget weighs the same)
        def avg(attr: str, per_budget: list = per_budget) -> float:  # type: ignore[type-arg]
            vals = [getattr(s, attr) for s in per_budget if not math.isnan(getattr(s, attr))]
            return _mean(vals)

        out.append(
            PolicySummary(
                policy, stream, 0.0, sum(s.n for s in per_budget), avg("mean_accuracy"),
                avg("mean_regret"), sum(s.first_visit_n for s in per_budget),
                avg("first_visit_regret"), sum(s.repeat_n for s in per_budget),
                avg("repeat_regret"), avg("mean_seconds"),
            )
        )
    return out


def _compute_ratio(
    search: str, trajectories: Sequence[Trajectory], nasoa: PolicySummary, horizon: float
) -> ComputeRatio:
    """When the search's mean accuracy over tasks first reaches NASOA's, against NASOA's compute."""
    budget, target, used = nasoa.budget_seconds, nasoa.mean_accuracy, nasoa.mean_seconds
    times = sorted({t for tr in trajectories for t in tr.seconds})
    needed = next(
        (t for t in times if _mean([tr.best_within(t) for tr in trajectories]) >= target - 1e-9),
        None,
    )
    spent = horizon if needed is None else needed
    ratio = spent / used if used > 0 else math.inf
    return ComputeRatio(search, budget, target, used, needed, ratio, spent / budget, needed is None)


def run_replay(
    table: ExperienceTable | str | Path,
    budgets_seconds: Sequence[float] = DEFAULT_BUDGETS_SECONDS,
    orders: int = 3,
    seed: int = 0,
    folds: int = 5,
    *,
    policies: Sequence[str] = ONE_SHOT_POLICIES,
    searches: Sequence[str] = SEARCHES,
    cold_start: bool = True,
    search_horizon_factor: float = 64.0,
    search_repeats: int = 1,
    policy_factory: PolicyFactory | None = None,
    png_path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Replay a table of past runs as a stream of requests; compare policies and searches.

    Parameters
    ----------
    table
        An :class:`ExperienceTable`, a .csv/.jsonl path, a Quick-Tune folder, or the name
        ``quicktune-extended``.
    budgets_seconds
        The budgets each task is requested with (one request per task and budget).
    orders
        How many shuffled orders of each stream are played.
    seed
        Seeds the folds, the orders and the policies.
    folds
        Number of task folds of the warm-start protocol.
    policies
        One-shot policies: ``nasoa``, ``random``, ``best-prior``, ``oracle``.
    searches
        Search baselines: ``tpe``, ``hyperband`` (empty to skip them).
    cold_start
        Also play a stream of all tasks with no warm start.
    search_horizon_factor
        Searches run up to this times the largest budget; the compute ratio is a lower
        bound (">= X") when a search has not matched NASOA by then.
    search_repeats
        Seeds per task for each search.
    policy_factory
        ``(name, seed, table, space) -> Policy``; the default builds the real ``Adaptor``
        for ``nasoa``.
    png_path
        Where to write the regret-along-the-stream plot (None: no plot).
    progress
        Called with a line of text at each step (e.g. ``print``).
    """
    started = time.perf_counter()
    say = progress or (lambda line: log.info("%s", line))
    if not isinstance(table, ExperienceTable):
        table = load_named_table(table)
    budgets = [float(b) for b in budgets_seconds]
    if not budgets or any(not math.isfinite(b) or b <= 0 for b in budgets):
        raise ValueError(f"budgets must be positive numbers of seconds, got {budgets_seconds!r}")
    if orders < 1:
        raise ValueError(f"orders must be >= 1, got {orders}")
    factory = policy_factory or default_policy_factory
    by_task = table.by_task()
    task_ids = sorted(by_task)
    space = HpSpace([(r.model, r.hparams) for r in table.runs])
    oracle = {
        (t, b): max(r.outcome_within(b)[0] for r in by_task[t]) for t in task_ids for b in budgets
    }
    fold_tasks = _split_folds(task_ids, folds, seed)
    records: list[RequestRecord] = []
    timings: dict[str, float] = {}
    load_time = time.perf_counter() - started

    # ---- warm-started streams, fold by fold
    t0 = time.perf_counter()
    for fold, held_out in enumerate(fold_tasks):
        past = [r for r in table.runs if r.task_id not in set(held_out)]
        random.Random(seed * 7919 + fold).shuffle(past)  # warm-start data arrives shuffled
        prototypes: dict[str, Policy] = {}
        for name in policies:
            tw = time.perf_counter()
            policy = factory(name, seed, table, space)
            policy.warm_start(past)
            prototypes[name] = policy
            timings[f"warm_start_{name}"] = timings.get(f"warm_start_{name}", 0.0) + time.perf_counter() - tw
        for order in range(orders):
            requests = [(t, b) for t in held_out for b in budgets]
            random.Random(f"{seed}-warm-{fold}-{order}").shuffle(requests)
            # deepcopy: each order starts from the same warm-started state
            fresh = {n: copy.deepcopy(p) for n, p in prototypes.items()}
            _play("warm", order, fold, requests, fresh, by_task, oracle, records)
        say(f"warm fold {fold + 1}/{folds} done ({time.perf_counter() - t0:.0f}s)")
    timings["warm_streams"] = time.perf_counter() - t0

    # ---- cold-start streams
    if cold_start:
        t0 = time.perf_counter()
        for order in range(orders):
            requests = [(t, b) for t in task_ids for b in budgets]
            random.Random(f"{seed}-cold-{order}").shuffle(requests)
            fresh = {n: factory(n, seed + order, table, space) for n in policies}
            _play("cold", order, -1, requests, fresh, by_task, oracle, records)
            say(f"cold order {order + 1}/{orders} done ({time.perf_counter() - t0:.0f}s)")
        timings["cold_streams"] = time.perf_counter() - t0

    summaries = _summaries(records, budgets)

    # ---- search baselines
    search_rows: list[SearchSummary] = []
    ratios: list[ComputeRatio] = []
    horizon = search_horizon_factor * max(budgets)
    for name in searches:
        t0 = time.perf_counter()
        search = _make_search(name, space)
        trajectories: list[tuple[str, Trajectory]] = []
        for task in task_ids:
            for rep in range(search_repeats):
                trajectories.append((task, search.search(by_task[task], horizon, seed + rep)))
        for budget in budgets:
            accs = [tr.best_within(budget) for _, tr in trajectories]
            regrets = [oracle[(task, budget)] - tr.best_within(budget) for task, tr in trajectories]
            trials = [float(tr.trials) for _, tr in trajectories]
            search_rows.append(
                SearchSummary(name, budget, len(accs), _mean(accs), _mean(regrets), _mean(trials))
            )
            if "nasoa" in policies:
                nasoa = next(
                    s for s in summaries
                    if (s.policy, s.stream, s.budget_seconds) == ("nasoa", "warm", budget)
                )
                ratios.append(
                    _compute_ratio(name, [tr for _, tr in trajectories], nasoa, horizon)
                )
        timings[f"search_{name}"] = time.perf_counter() - t0
        say(f"search {name} done ({timings[f'search_{name}']:.0f}s)")

    goal = math.nan
    if "nasoa" in policies:
        goal = _mean([
            s.first_visit_regret for s in summaries
            if s.policy == "nasoa" and s.stream == "warm" and s.budget_seconds
            and not math.isnan(s.first_visit_regret)
        ])
    timings["load"] = load_time
    timings["total"] = time.perf_counter() - started
    config: dict[str, object] = {
        "table": table.name or "table",
        "n_tasks": len(task_ids),
        "n_runs": len(table.runs),
        "budgets_seconds": budgets,
        "orders": orders,
        "seed": seed,
        "folds": folds,
        "fold_tasks": fold_tasks,
        "policies": list(policies),
        "searches": list(searches),
        "cold_start": cold_start,
        "search_horizon_seconds": horizon,
        "search_repeats": search_repeats,
    }
    result = ReplayResult(config, summaries, search_rows, ratios, records, timings, goal)
    if png_path is not None:
        result.save_png(png_path)
    return result
