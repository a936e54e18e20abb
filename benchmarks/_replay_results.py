"""What a replay measured: per-request records, per-policy summaries, searches, compute ratios.

:class:`ReplayResult` formats the text table (``format_table``), strict JSON (``to_json``) and
the regret-along-the-stream plot (``save_png``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ComputeRatio", "PolicySummary", "ReplayResult", "RequestRecord", "SearchSummary"]


def _fmt_budget(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:g}h" if hours >= 0.1 else f"{seconds:g}s"


def _fmt_used(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"



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
    seconds: float  # probes included
    oracle_accuracy: float
    probes: int = 0  # runs probed before the chosen one continued (0: a one-shot pick)

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
            f"{'stream':<6} {'budget':>7} {'policy':<14} {'n':>5} {'acc':>6} {'regret':>7} "
            f"{'1st-visit':>9} {'repeat':>7} {'hours':>6}",
        ]
        for stream in ("warm", "cold"):
            for budget in [*budgets, 0.0]:
                for s in self.summaries:
                    if s.stream != stream or s.budget_seconds != budget:
                        continue
                    label = _fmt_budget(budget) if budget else "mean"
                    lines.append(
                        f"{stream:<6} {label:>7} {s.policy:<14} {s.n:>5} {s.mean_accuracy:>6.1f} "
                        f"{s.mean_regret:>7.1f} {_f(s.first_visit_regret):>9} "
                        f"{_f(s.repeat_regret):>7} {s.mean_seconds / 3600:>6.2f}"
                    )
        staged = [r for r in self.records if r.probes]
        if staged:
            lines += ["", "staged plans (probes, then the chosen run continues): "
                      + ", ".join(f"{p} {len(mine)} of {sum(r.policy == p for r in self.records)} requests, "
                                  f"{sum(r.probes for r in mine) / len(mine):.1f} probes each"
                                  for p in dict.fromkeys(r.policy for r in staged)
                                  for mine in [[r for r in staged if r.policy == p]])]
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
                "compute a search needs to match NASOA's warm mean accuracy, over the "
                "compute NASOA used (and over its budget):",
            ]
            for c in self.compute_ratios:
                lines.append(
                    f"  {c.search:<10} at {_fmt_budget(c.budget_seconds):>5}: NASOA "
                    f"{c.nasoa_accuracy:.1f}% in {_fmt_used(c.nasoa_seconds)}, "
                    f"ratio {c.text()} (to the budget {c.budget_text()})"
                )
        infeasible = list(self.config.get("infeasible_requests", []))  # type: ignore[call-overload]
        if infeasible:
            lines += ["", f"{len(infeasible)} (task, budget) requests offer no run whose first epoch fits: left out "
                      "(" + ", ".join(f"{t} at {_fmt_budget(b)}" for t, b in infeasible[:5])
                      + (", ..." if len(infeasible) > 5 else "") + ")"]
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
        return save_figure(fig, path)


def save_figure(fig: object, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    path = Path(path)
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
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
