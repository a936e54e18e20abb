"""One-shot policies the replay compares, behind one small interface (searches: ``_searches.py``).

:class:`Policy` (picks one run per request) has one abstract method,
:meth:`Policy.choose`; :meth:`Policy.warm_start` and :meth:`Policy.observe` default to doing
nothing. A policy never sees outcomes through ``choose``: the request carries the task's
meta-features, the budget and the candidate runs' model and hyperparameters only (the
oracle is the one exception, and says so). Policies are not thread safe; the replay
deep-copies a warm-started policy for each order of the stream.
"""

from __future__ import annotations

import abc
import logging
import random
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptor_service import (
    CURVE_SAMPLE_EPOCHS,
    BestPriorRanker,
    ExperienceRun,
    HpSpace,
    decide_continuing,
    runs_to_observations,
    sample_curve,
)
from benchmarks._searches import AnytimeSearch, HyperbandSearch, TPESearch, Trajectory
from nasoa_contracts import Candidate, CurvePoint, HParamValue, Observation, Stage, TaskSpec

__all__ = [
    "AnytimeSearch",
    "BestPriorPolicy",
    "Decision",
    "HyperbandSearch",
    "HpSpace",
    "NasoaPolicy",
    "OraclePolicy",
    "Outcome",
    "Policy",
    "Probe",
    "RandomPolicy",
    "Request",
    "RunOption",
    "TPESearch",
    "Trajectory",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class RunOption:
    """What a policy sees of a candidate run: its configuration, never its outcome.

    ``epochs`` are the epoch counts the table recorded for the run (on the sampling grid,
    plus its last): the only lengths the run can be planned at. A run recorded once (its
    final epoch only) is one candidate.
    """

    run_id: str
    model: str
    hparams: Mapping[str, HParamValue]
    epochs: tuple[int, ...] = ()


@dataclass(frozen=True)
class Request:
    """One (task, budget) request of the stream."""

    task_id: str
    meta_features: Mapping[str, float]
    budget_seconds: float
    options: tuple[RunOption, ...]
    first_visit: bool = True

    def task_spec(self) -> TaskSpec:
        return TaskSpec(
            dataset_uri=f"experience:{self.task_id}",
            budget_seconds=self.budget_seconds,
            meta_features=dict(self.meta_features),
            task_id=self.task_id,
        )


@dataclass(frozen=True)
class Outcome:
    """What running the chosen run within the budget gave: best accuracy, seconds, curve."""

    run_id: str
    accuracy: float
    seconds: float
    curve: tuple[CurvePoint, ...]


@dataclass(frozen=True)
class Decision:
    """What a policy runs for a request: its ``probes`` first, then ``choice``.

    ``probes`` are (run index, epochs) pairs, run in turn for that many epochs each; the
    chosen run then continues to ``epochs`` (0: as far as the budget allows). A one-shot
    policy's decision is its choice alone.
    """

    choice: int
    epochs: int = 0
    probes: tuple[tuple[int, int], ...] = ()


#: ``probe(run index, epochs)``: the run's measured curve up to ``epochs`` (within the budget left).
Probe = Callable[[int, int], tuple[CurvePoint, ...]]


# ------------------------------------------------------------------------------ policies


class Policy(abc.ABC):
    """Picks one candidate run per request (Optuna's sampler shape).

    Contract: ``choose`` returns an index into ``request.options``; it must not modify the
    request. ``observe`` receives the outcome of that choice (online learning). All
    randomness comes from ``seed``.
    """

    name: str = "policy"

    def warm_start(self, runs: Sequence[ExperienceRun]) -> None:  # noqa: B027
        """Learn from past runs (all their curves) before the stream. Default: nothing."""

    @abc.abstractmethod
    def choose(self, request: Request) -> int:
        """Index of the chosen run in ``request.options``."""

    def decide(self, request: Request, probe: Probe) -> Decision:
        """What to run for ``request``; ``probe`` measures runs' curve prefixes. Default: ``choose``."""
        return Decision(self.choose(request))

    def observe(self, request: Request, choice: int, outcome: Outcome) -> None:  # noqa: B027
        """Learn from the outcome of the chosen run. Default: nothing."""


class RandomPolicy(Policy):
    """A run drawn uniformly at random."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def choose(self, request: Request) -> int:
        return self._rng.randrange(len(request.options))


class OraclePolicy(Policy):
    """The run with the best outcome within the budget, in hindsight (reads outcomes)."""

    name = "oracle"

    def __init__(self, runs: Sequence[ExperienceRun]) -> None:
        self._runs = {(r.task_id, r.run_id): r for r in runs}

    def choose(self, request: Request) -> int:
        scores = [
            self._runs[(request.task_id, o.run_id)].outcome_within(request.budget_seconds)[0]
            for o in request.options
        ]
        return int(np.argmax(scores))


class BestPriorPolicy(Policy):
    """The most successful model and regime so far (:class:`adaptor_service.BestPriorRanker`).

    Each past run scores, at the request's budget, the percentile of its outcome among the
    runs known for its task; a candidate scores the mean percentile of its ``k`` nearest past
    runs in the table's :class:`HpSpace`; the best-scoring candidate is picked. It learns from
    the warm start and from each observed outcome (a partial curve). It ignores the task's
    meta-features.
    """

    name = "best-prior"

    def __init__(self, space: HpSpace, k: int = 5, seed: int = 0) -> None:
        self.space = space
        self.k = k
        self.seed = seed
        self._ranker = BestPriorRanker(k, space)

    def warm_start(self, runs: Sequence[ExperienceRun]) -> None:
        for run in runs:
            self._ranker.learn_run(run.task_id, run.model, run.hparams, run.curve)

    def choose(self, request: Request) -> int:
        configs = [(o.model, o.hparams) for o in request.options]
        return int(np.argmax(self._ranker.score(configs, request.budget_seconds)))

    def observe(self, request: Request, choice: int, outcome: Outcome) -> None:
        option = request.options[choice]
        if outcome.curve:
            self._ranker.learn_run(request.task_id, option.model, option.hparams, outcome.curve)


class NasoaPolicy(Policy):
    """NASOA: the service's :class:`Adaptor` (predictors and schedule generator).

    Each candidate run is offered at its recorded epochs (``RunOption.epochs``; the epochs of
    ``epoch_grid`` when the option names none); the adaptor predicts the accuracy and time of
    each, and its generator plans (``generator``: ``probe-then-commit`` or ``one-shot``).

    - A one-shot plan's run runs until its last epoch that fits the budget (the replay's
      outcome is its best accuracy within the budget, its seconds those of that epoch).
    - A staged plan's probes run in turn (one worker) for their stage's epochs; each probe's
      curve prefix is observed as a ``stopped`` result, the runs are predicted again at their
      full length and :func:`adaptor_service.decide_continuing` picks the one that continues,
      as the live service decides: as soon as the probes not run yet could not beat it (those
      are then not run, nor charged). It continues as far as the budget allows (what the other
      probes left), as a one-shot pick does, unless ``to_planned_length``: then it stops at
      its planned length (the generator plans it with the time margin).

    The run's curve up to the budget is then observed. ``adaptor_factory(snapshot_path)``
    builds a fresh adaptor (default: ``Adaptor.in_memory()`` with the default predictors and
    the generator). A copy of the policy (``copy.deepcopy``) goes through the adaptor's own
    snapshot: the learned state is written once and each copy restores it, as a restarted
    service would.
    """

    name = "nasoa"

    def __init__(
        self,
        adaptor_factory: Callable[[Path | None], Any] | None = None,
        epoch_grid: Sequence[int] = CURVE_SAMPLE_EPOCHS,
        seed: int = 0,
        generator: str = "probe-then-commit",
        to_planned_length: bool = False,
    ) -> None:
        self.adaptor_factory = adaptor_factory
        self.epoch_grid = tuple(epoch_grid)
        self.seed = seed
        self.generator = generator
        self.to_planned_length = to_planned_length
        workdir = tempfile.mkdtemp(prefix="nasoa-replay-")
        weakref.finalize(self, shutil.rmtree, workdir, True)  # removed with the policy
        self._snapshot = Path(workdir) / "adaptor.pkl"
        self._adaptor = self._factory()(self._snapshot)
        self._n_observed = 0

    def _factory(self) -> Callable[[Path | None], Any]:
        return self.adaptor_factory or default_adaptor_factory(self.seed, self.generator)

    @property
    def adaptor(self) -> Any:
        return self._adaptor

    def __deepcopy__(self, memo: dict[int, object]) -> NasoaPolicy:
        self._adaptor.snapshot()
        twin = NasoaPolicy(self.adaptor_factory, self.epoch_grid, self.seed, self.generator, self.to_planned_length)
        shutil.copyfile(self._snapshot, twin._snapshot)
        twin._adaptor = twin._factory()(twin._snapshot)  # restores the snapshot
        twin._n_observed = self._n_observed
        return twin

    def _candidates(self, request: Request) -> tuple[list[Candidate], dict[str, int]]:
        candidates = []
        index: dict[str, int] = {}
        for i, option in enumerate(request.options):
            for epochs in option.epochs or self.epoch_grid:
                candidate = Candidate(option.model, dict(option.hparams), epochs=epochs)
                candidates.append(candidate)
                index.setdefault(candidate.key, i)
        return candidates, index

    def warm_start(self, runs: Sequence[ExperienceRun]) -> None:
        self._adaptor.warm_start(runs_to_observations(runs))

    def choose(self, request: Request) -> int:
        candidates, index = self._candidates(request)
        plan = self._adaptor.recommend(request.task_spec(), candidates)
        return index[plan.candidate.key]

    def decide(self, request: Request, probe: Probe) -> Decision:
        candidates, index = self._candidates(request)
        task = request.task_spec()
        plan = self._adaptor.recommend(task, candidates)
        if not plan.staged:
            return Decision(index[plan.candidate.key])
        stage = plan.stages[0]
        probes = []
        measured: list[int] = []  # the stage's runs that measured an epoch
        for n, run in enumerate(stage.runs):
            i = index[run.key]
            probes.append((i, stage.stop_after_epochs))
            curve = probe(i, stage.stop_after_epochs)
            if curve:  # a probe that did not finish an epoch measured nothing
                self._observe(task, request.options[i], run.epochs, sample_curve(curve, self.epoch_grid), "stopped")
                measured.append(n)
            # One worker runs the probes in turn: the stage is decided as the service decides
            # it, as soon as the runs not probed yet could not beat the ones that were.
            considered = measured + list(range(n + 1, len(stage.runs)))
            if not considered:
                break
            runs = [stage.runs[j] for j in considered]
            again = self._adaptor.predict(task, runs)  # the probes' curves now count
            part = Stage(tuple(runs), tuple(stage.predictions[j] for j in considered), stage.stop_after_epochs,
                         stage.keep)
            kept = decide_continuing(part, again, [j <= n for j in considered], self._decision_confidence())
            if kept is not None:
                winner = runs[kept[0]]
                return Decision(index[winner.key], winner.epochs if self.to_planned_length else 0, tuple(probes))
        winner = stage.runs[0]  # no probe measured anything: the one-shot pick, as planned first
        return Decision(index[winner.key], winner.epochs if self.to_planned_length else 0, tuple(probes))

    def _decision_confidence(self) -> float:
        schedules = getattr(getattr(self._adaptor, "jobs", None), "schedules", None)
        return schedules.confidence if schedules is not None else 1.0

    def observe(self, request: Request, choice: int, outcome: Outcome) -> None:
        if not outcome.curve:
            return  # not even one epoch fitted: nothing was measured
        curve = sample_curve(outcome.curve, self.epoch_grid)
        self._observe(request.task_spec(), request.options[choice], curve[-1].epoch, curve, "ok")

    def _observe(
        self, task: TaskSpec, option: RunOption, epochs: int, curve: Sequence[CurvePoint], status: str
    ) -> None:
        self._n_observed += 1
        self._adaptor.observe(Observation(
            job_id=f"replay-{self._n_observed}-{task.task_id}-{option.run_id}",
            task=task,
            candidate=Candidate(option.model, dict(option.hparams), epochs=epochs),
            accuracy=max(p.accuracy for p in curve),
            seconds=curve[-1].seconds,
            curve=tuple(curve),
            status=status,
        ))


def default_adaptor_factory(seed: int = 0, generator: str = "probe-then-commit") -> Callable[[Path | None], Any]:
    """``Adaptor.in_memory`` with the default predictors and ``generator`` (``probe-then-commit``, ``one-shot``).

    The probe-then-commit generator plans no length beyond the recorded ones (the table
    measured no other).
    """

    def make(snapshot_path: Path | None) -> Any:
        from adaptor_service import (  # lazy: the service is heavy
            AccuracyPredictor,
            Adaptor,
            OneShotGenerator,
            ProbeThenCommitGenerator,
            TimePredictor,
        )

        if generator == "one-shot":
            chosen: Any = OneShotGenerator(seed=seed)
        elif generator == "probe-then-commit":
            chosen = ProbeThenCommitGenerator(seed=seed, max_epochs=0)
        else:
            raise ValueError(f"unknown generator {generator!r}: choose probe-then-commit or one-shot")
        return Adaptor.in_memory(
            generator=chosen,
            accuracy_predictor=AccuracyPredictor(seed=seed),
            time_predictor=TimePredictor(seed=seed),
            snapshot_path=snapshot_path,
            snapshot_every=10**9,  # only when a copy is made
            validate_requests=False,  # tasks and runs of experience tables, not service requests
        )

    return make
