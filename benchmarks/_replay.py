"""Replay benchmark: stream (task, budget) requests over a table of past fine-tuning runs.

Protocol (docs/REPLAY.md):

- A candidate is a (run, recorded epoch) that exists in the table: a run recorded once is one
  candidate. A (task, budget) where no run's first recorded epoch fits is reported and left out.
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
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from adaptor_service import ExperienceRun, ExperienceTable, read_table, sample_curve
from benchmarks._policies import (
    BestPriorPolicy,
    Decision,
    HpSpace,
    NasoaPolicy,
    OraclePolicy,
    Outcome,
    Policy,
    RandomPolicy,
    Request,
    RunOption,
)
from benchmarks._replay_results import (
    ComputeRatio,
    PolicySummary,
    ReplayResult,
    RequestRecord,
    SearchSummary,
    _mean,
)
from benchmarks._searches import AnytimeSearch, HyperbandSearch, TPESearch, Trajectory
from nasoa_contracts import CurvePoint

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
ONE_SHOT_POLICIES: tuple[str, ...] = ("nasoa", "nasoa-one-shot", "random", "best-prior", "oracle")
SEARCHES: tuple[str, ...] = ("tpe", "hyperband")


def parse_budget(text: str) -> float:
    """A budget such as ``0.5h``, ``30m``, ``90s`` or ``1800`` as seconds (the CLI's parser).

    >>> parse_budget("0.5h"), parse_budget("30m"), parse_budget("90s"), parse_budget("12")
    (1800.0, 1800.0, 90.0, 12.0)
    """
    from nasoa import parse_duration

    return parse_duration(text)


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


# ------------------------------------------------------------------------------ running


PolicyFactory = Callable[[str, int, ExperienceTable, HpSpace], Policy]


def default_policy_factory(name: str, seed: int, table: ExperienceTable, space: HpSpace) -> Policy:
    """Build a policy by name: nasoa (probe-then-commit), nasoa-one-shot, random, best-prior or oracle."""
    if name == "nasoa":
        return NasoaPolicy(seed=seed)
    if name == "nasoa-one-shot":
        return NasoaPolicy(seed=seed, generator="one-shot")
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
    """The runs as candidates, each at the epochs the table recorded for it (sampled, plus its last)."""
    return tuple(
        RunOption(r.run_id, r.model, r.hparams, tuple(p.epoch for p in sample_curve(r.curve))) for r in runs
    )


class _Runner:
    """Runs a policy's decision on a task's runs within a budget, from their measured curves.

    Probes run in turn, each for its epochs or until the budget is spent (a probe that does
    not finish an epoch spends the rest); the chosen run then continues to its planned
    epochs within what the other probes left: probe seconds count against the budget.
    """

    def __init__(self, runs: Sequence[ExperienceRun], budget: float) -> None:
        self.runs = runs
        self.budget = budget
        self.left = budget
        self.spent: dict[int, float] = {}

    def probe(self, index: int, epochs: int) -> tuple[CurvePoint, ...]:
        run = self.runs[index]
        head = [p for p in run.curve if p.epoch <= epochs] or list(run.curve[:1])
        points = run.curve_within(min(self.left, head[-1].seconds))
        cost = points[-1].seconds if points else self.left
        self.left -= cost
        self.spent[index] = self.spent.get(index, 0.0) + cost
        return points

    def run(self, decision: Decision) -> tuple[float, float, tuple[CurvePoint, ...]]:
        """(best accuracy, total seconds incl. probes, the chosen run's curve) of ``decision``."""
        others = sum(s for i, s in self.spent.items() if i != decision.choice)
        left = self.budget - others
        run = self.runs[decision.choice]
        points = run.curve_within(left)
        if decision.epochs:
            points = tuple(p for p in points if p.epoch <= decision.epochs)
        if not points:
            return 0.0, self.budget, ()
        return max(p.accuracy for p in points), others + points[-1].seconds, points


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
            runner = _Runner(runs, budget)
            decision = policy.decide(request, runner.probe)
            run = runs[decision.choice]
            accuracy, seconds, curve = runner.run(decision)
            policy.observe(request, decision.choice, Outcome(run.run_id, accuracy, seconds, curve))
            records.append(
                RequestRecord(
                    stream, order, fold, position, task_id, budget, request.first_visit, name,
                    run.run_id, accuracy, seconds, oracle[(task_id, budget)], len(decision.probes),
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
    warm_exclude: Callable[[ExperienceRun], bool] | None = None,
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
    warm_exclude
        Past runs for which this is true are left out of the warm start (e.g. a model family
        the held-out tasks then offer unseen); they stay in the tasks' pools.
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
    # A request whose every run's first epoch overruns the budget offers nothing that fits:
    # no policy can score there, so it is reported and left out of the streams.
    infeasible = {(t, b) for t in task_ids for b in budgets if min(r.curve[0].seconds for r in by_task[t]) > b}
    if len(infeasible) == len(task_ids) * len(budgets):
        raise ValueError("no run of any task fits any budget: choose larger budgets")
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
        past = [r for r in table.runs if r.task_id not in set(held_out) and not (warm_exclude and warm_exclude(r))]
        random.Random(seed * 7919 + fold).shuffle(past)  # warm-start data arrives shuffled
        prototypes: dict[str, Policy] = {}
        for name in policies:
            tw = time.perf_counter()
            policy = factory(name, seed, table, space)
            policy.warm_start(past)
            prototypes[name] = policy
            timings[f"warm_start_{name}"] = timings.get(f"warm_start_{name}", 0.0) + time.perf_counter() - tw
        for order in range(orders):
            requests = [(t, b) for t in held_out for b in budgets if (t, b) not in infeasible]
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
            requests = [(t, b) for t in task_ids for b in budgets if (t, b) not in infeasible]
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
        "infeasible_requests": [[t, b] for t, b in sorted(infeasible)],
        "search_horizon_seconds": horizon,
        "search_repeats": search_repeats,
    }
    result = ReplayResult(config, summaries, search_rows, ratios, records, timings, goal)
    if png_path is not None:
        result.save_png(png_path)
    return result
