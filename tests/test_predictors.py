"""Common checks over every River-shaped estimator, and small learning tests that can fail.

River's own estimator checks (``river.checks.yield_checks``: clone, repr, pickling, seeding,
shuffled, emerging and disappearing features, ...) run on each estimator configuration, with
the one check River lacks: after a pickle round trip, the predictions are equal.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import random
from collections.abc import Callable

import numpy as np
import pytest
from river import base, checks, linear_model

from adaptor_service._predictors import (
    AccuracyPredictor,
    BatchRefitRegressor,
    CandidateBlock,
    FeatureIndex,
    FeatureRows,
    ModelTimePrior,
    TimePredictor,
    make_features,
)
from nasoa_contracts import Candidate, TaskSpec

MODELS = ("alpha", "beta", "gamma")


def _small_gb(seed: int = 0) -> BatchRefitRegressor:
    return BatchRefitRegressor(max_iter=20, min_samples=30, min_samples_leaf=3, n_members=2, seed=seed)


#: Every predictor configuration the service or the replay uses (factories: fresh each time).
PREDICTORS: dict[str, Callable[[], AccuracyPredictor | TimePredictor]] = {
    "accuracy-default": lambda: AccuracyPredictor(),
    "accuracy-shrunk": lambda: AccuracyPredictor(task_prior_weight=30.0),
    "accuracy-interactions": lambda: AccuracyPredictor(interactions=True),
    "accuracy-raw": lambda: AccuracyPredictor(normalize_by_task=False),
    "accuracy-gb": lambda: AccuracyPredictor(_small_gb(), task_prior_weight=30.0, seed=1),
    "accuracy-blr": lambda: AccuracyPredictor(linear_model.BayesianLinearRegression()),
    "time-default": lambda: TimePredictor(),
    "time-gb": lambda: TimePredictor(_small_gb(), seed=2),
}


def _task(i: int) -> TaskSpec:
    return TaskSpec(f"experience:t{i}", 3600.0, {"num_samples": 1000.0 * (1 + i), "num_classes": 10.0 + i})


def _truth(task: int, model: str, lr: float, epochs: int) -> tuple[float, float]:
    """A made-up world: accuracy and seconds of a run."""
    quality = {"alpha": 0.0, "beta": 8.0, "gamma": 15.0}[model]
    accuracy = 40.0 + 5 * task + quality - 6 * abs(math.log10(lr) + 3) + 10 * math.log(epochs)
    seconds = epochs * (1000.0 * (1 + task)) / 64 * {"alpha": 0.01, "beta": 0.03, "gamma": 0.08}[model]
    return min(accuracy, 99.0), seconds


def _samples(n: int, seed: int = 0, tasks: int = 6) -> list[tuple[dict[str, float], float, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        task = rng.randrange(tasks)
        model = rng.choice(MODELS)
        lr = 10 ** rng.uniform(-5, -1)
        epochs = rng.choice([1, 2, 3, 5, 8, 12])
        accuracy, seconds = _truth(task, model, lr, epochs)
        x = make_features(_task(task), Candidate(model, {"lr": lr, "batch_size": 64}, epochs=epochs))
        out.append((x, accuracy + rng.gauss(0, 1), seconds * math.exp(rng.gauss(0, 0.05))))
    return out


def _learn(predictor: AccuracyPredictor | TimePredictor, samples: list) -> None:
    for x, accuracy, seconds in samples:
        predictor.learn_one(x, seconds if isinstance(predictor, TimePredictor) else accuracy)


@pytest.fixture(scope="module")
def samples() -> list[tuple[dict[str, float], float, float]]:
    return _samples(120)


#: Every River-shaped estimator we have, in each configuration its ``_unit_test_params`` names
#: (River's convention: small models, so the checks are quick).
ESTIMATORS: dict[str, Callable[[], base.Regressor]] = {
    f"{cls.__name__}-{i}": (lambda cls=cls, params=params: cls(**params))
    for cls in (BatchRefitRegressor, AccuracyPredictor, TimePredictor, ModelTimePrior)
    for i, params in enumerate(cls._unit_test_params())
}


def check_pickle_round_trip_gives_equal_predictions(model: base.Regressor) -> None:
    """The check River lacks: a pickled and restored model predicts, and goes on learning, the same."""
    samples = _samples(120)
    target = 2 if isinstance(model, (TimePredictor, ModelTimePrior)) else 1
    for sample in samples:
        model.learn_one(sample[0], sample[target])
    twin = pickle.loads(pickle.dumps(model))
    xs = [x for x, _, _ in samples[:40]]
    assert [twin.predict_one(x) for x in xs] == [model.predict_one(x) for x in xs]
    for sample in _samples(40, seed=9):
        model.learn_one(sample[0], sample[target])
        twin.learn_one(sample[0], sample[target])
    assert [twin.predict_one(x) for x in xs] == [model.predict_one(x) for x in xs]


def _checks(make: Callable[[], base.Regressor]) -> list[Callable[[base.Regressor], None]]:
    model = make()
    river_checks = [c for c in checks.yield_checks(model) if c.__name__ not in model._unit_test_skips()]
    return [*river_checks, check_pickle_round_trip_gives_equal_predictions]


@pytest.mark.parametrize(
    ("make", "check"),
    [pytest.param(make, check, id=f"{name}-{check.__name__}")
     for name, make in sorted(ESTIMATORS.items()) for check in _checks(make)]
    # and the service's own configurations (default sizes) against the check River lacks
    + [pytest.param(make, check_pickle_round_trip_gives_equal_predictions, id=f"{name}-pickle-predictions")
       for name, make in sorted(PREDICTORS.items())],
)
def test_estimator_checks(make: Callable[[], base.Regressor], check: Callable[[base.Regressor], None]) -> None:
    """River's own estimator checks (clone, repr, pickling, shuffled and emerging features, ...) and ours."""
    check(make())


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_learning_is_deterministic(name: str, samples: list) -> None:
    a, b = PREDICTORS[name](), PREDICTORS[name]()
    _learn(a, samples)
    _learn(b, samples)
    xs = [x for x, _, _ in samples[:40]]
    assert a.predict_many(xs) == b.predict_many(xs)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_predict_many_agrees_with_predict_dist(name: str, samples: list) -> None:
    predictor = PREDICTORS[name]()
    assert predictor.predict_many([samples[0][0]]) == [predictor.predict_dist(samples[0][0])]
    _learn(predictor, samples)
    xs = [x for x, _, _ in samples[:30]]
    for (m1, s1), (m2, s2) in zip(predictor.predict_many(xs), [predictor.predict_dist(x) for x in xs], strict=True):
        assert m1 == pytest.approx(m2, rel=1e-9, abs=1e-9)
        assert s1 == pytest.approx(s2, rel=1e-9, abs=1e-9)
        assert math.isfinite(m1) and s1 >= 0


def test_seed_reaches_the_bootstrap_members(samples: list) -> None:
    xs = [x for x, _, _ in samples[:40]]
    a, b = TimePredictor(_small_gb(seed=0)), TimePredictor(_small_gb(seed=1))
    _learn(a, samples)
    _learn(b, samples)
    assert a.predict_many(xs) != b.predict_many(xs)


@pytest.mark.parametrize("name", ["time-default", "time-gb"])
def test_time_predictor_learns(name: str) -> None:
    predictor = PREDICTORS[name]()
    _learn(predictor, _samples(400, seed=1))
    test = _samples(100, seed=2)
    errors = sorted(abs(math.log(predictor.predict_one(x) / seconds)) for x, _, seconds in test)
    assert errors[len(errors) // 2] < 0.25  # median within about 28%


@pytest.mark.parametrize("name", ["accuracy-shrunk", "accuracy-gb"])
def test_accuracy_predictor_ranks_an_unseen_task(name: str) -> None:
    """Trained on tasks 0-5, it ranks the runs of task 7 (never seen) in the right order."""
    predictor = PREDICTORS[name]()
    _learn(predictor, _samples(600, seed=3))
    task = _task(7)
    grid = [(m, lr) for m in MODELS for lr in (1e-4, 1e-3, 1e-2)]
    xs = [make_features(task, Candidate(m, {"lr": lr, "batch_size": 64}, epochs=8)) for m, lr in grid]
    predicted = [p for p, _ in predictor.predict_many(xs)]
    truth = [_truth(7, m, lr, 8)[0] for m, lr in grid]
    best = max(range(len(grid)), key=predicted.__getitem__)
    assert truth[best] >= sorted(truth)[-2]  # the best or the runner-up


def test_a_few_observations_of_a_new_task_do_not_distort_the_model() -> None:
    """The picked run of a new task, learnt alone, must not undo what the model knew.

    With the task's own mean and spread taken from one observed curve, that run becomes
    "average" for its task and the model un-learns why it was picked (docs/REPLAY.md).
    """
    predictor = AccuracyPredictor(task_prior_weight=30.0)
    _learn(predictor, _samples(600, seed=4))
    task = _task(8)
    xs = [make_features(task, Candidate(m, {"lr": 1e-3, "batch_size": 64}, epochs=8)) for m in MODELS]
    before = [p for p, _ in predictor.predict_many(xs)]
    for epochs in (1, 2, 3, 5, 8):  # the curve of the best model, as the replay observes it
        x = make_features(task, Candidate("gamma", {"lr": 1e-3, "batch_size": 64}, epochs=epochs))
        predictor.learn_one(x, _truth(8, "gamma", 1e-3, epochs)[0])
    after = [p for p, _ in predictor.predict_many(xs)]
    assert max(range(3), key=before.__getitem__) == max(range(3), key=after.__getitem__) == 2


def test_refits_restandardise_early_samples_with_the_task_level_of_now() -> None:
    """Samples learnt while a task was barely known are refit with its current level.

    Here every task's runs arrive worst first: with learn-time targets the early (bad) runs
    look average for their task and the fit is told little about them.
    """
    samples = sorted(_samples(400, seed=5), key=lambda s: s[1])
    predictor = AccuracyPredictor(BatchRefitRegressor(max_iter=50, min_samples=10_000), task_prior_weight=30.0)
    _learn(predictor, samples)
    predictor.refit()
    targets = predictor._standardised_targets()
    level, spread = predictor._scale(samples[0][0])
    assert targets[0] == pytest.approx((samples[0][1] - level) / spread)
    by_task: dict[tuple, list[float]] = {}
    for (x, _, _), z in zip(samples, targets.tolist(), strict=True):
        by_task.setdefault(tuple(sorted((k, v) for k, v in x.items() if k.startswith("meta."))), []).append(z)
    for zs in by_task.values():  # each task now centred: early runs below 0, late ones above
        assert zs[0] < 0 < zs[-1]
    again = pickle.loads(pickle.dumps(predictor))
    assert np.array_equal(again._standardised_targets(), targets)
    xs = [x for x, _, _ in samples[:50]]
    assert again.predict_many(xs) == predictor.predict_many(xs)
    learnt_targets = AccuracyPredictor(BatchRefitRegressor(max_iter=50, min_samples=10_000), task_prior_weight=30.0)
    learnt_targets._model.set_target_source(None)
    _learn(learnt_targets, samples)
    learnt_targets.refit()
    assert learnt_targets.predict_many(xs) != predictor.predict_many(xs)


def test_adaptor_warm_start_ends_with_a_fit_on_everything() -> None:
    from adaptor_service import Adaptor
    from nasoa_contracts import CurvePoint, Observation

    adaptor = Adaptor.in_memory()
    observations = []
    for i, (x, accuracy, seconds) in enumerate(_samples(100, seed=6)):
        task = TaskSpec("experience:t", 3600.0, {k[5:]: v for k, v in x.items() if k.startswith("meta.")
                                                  and not k.startswith("meta.log_")})
        model = next(k[6:] for k in x if k.startswith("model="))
        candidate = Candidate(model, {"lr": x["hp.lr"], "batch_size": 64}, epochs=int(x["epochs"]))
        observations.append(Observation(f"w{i}", task, candidate, accuracy, seconds,
                                        (CurvePoint(candidate.epochs, accuracy, seconds),)))
    assert adaptor.warm_start(observations) == 100
    for predictor in (adaptor.state.accuracy, adaptor.state.time):
        assert predictor._model._scored == 100  # the last refit saw all 100 (the schedule's: 96)


def test_feature_index_matrix() -> None:
    index = FeatureIndex()
    index.add({"a": 1.0, "m=x": 1.0})
    index.add({"b": 2.0})
    matrix = index.matrix([{"b": 3.0, "a": 1.0}, {"m=x": 1.0}, {"zzz": 4.0}])
    assert matrix.shape == (3, 3)
    assert matrix[0].tolist()[::2] == [1.0, 3.0]
    assert matrix[0, 1] == 0.0 and math.isnan(matrix[1, 0]) and matrix[1, 1] == 1.0
    restored = pickle.loads(pickle.dumps(index))
    assert restored.columns == index.columns


def _make_features_before(task: TaskSpec, candidate: Candidate) -> dict[str, float]:
    """make_features as it was written before it was split into parts (frozen reference)."""
    x = {"epochs": float(candidate.epochs), "log_epochs": math.log(candidate.epochs)}
    log_samples = 0.0
    for key, value in task.meta_features.items():
        x[f"meta.{key}"] = float(value)
        if key in ("num_samples", "num_classes") and value > 0:
            x[f"meta.log_{key}"] = math.log(value)
    if task.meta_features.get("num_samples", 0) > 0:
        log_samples = math.log(task.meta_features["num_samples"])
        if task.meta_features.get("num_classes", 0) > 0:
            x["meta.log_samples_per_class"] = log_samples - math.log(task.meta_features["num_classes"])
    log_batch = 0.0
    for key, value in candidate.hparams.items():
        if isinstance(value, str):
            x[f"hp.{key}={value}"] = 1.0
        else:
            x[f"hp.{key}"] = float(value)
            if key in ("lr", "batch_size", "weight_decay", "warmup_lr") and value > 0:
                x[f"hp.log_{key}"] = math.log(float(value))
                if key == "batch_size":
                    log_batch = math.log(float(value))
    if log_samples:
        x["log_steps"] = x["log_epochs"] + log_samples - log_batch
    x[f"model={candidate.model}"] = 1.0
    for key, value in candidate.model_features.items():
        x[f"model.{key}"] = float(value)
    if candidate.prior_seconds is not None and candidate.prior_seconds > 0:
        x["log_prior_seconds"] = math.log(candidate.prior_seconds)
    return x


_ODD_TASKS = [
    TaskSpec("builtin:digits", 30, {}),
    TaskSpec("builtin:digits", 30, {"num_samples": 1.0, "num_classes": 0.0}),  # log 1 = 0: no log_steps
    TaskSpec("builtin:digits", 30, {"num_samples": 0.0, "num_classes": 3.0, "channels": 1.0}),
]
_ODD_CANDIDATES = [
    Candidate("m", {}, epochs=1),
    Candidate("m", {"batch_size": "auto", "lr": 0.0}, epochs=2, prior_seconds=0.0),
    Candidate("m", {"batch_size": 0, "warmup_lr": 1e-4, "log_lr": 3.0, "lr": 0.1}, epochs=7, prior_seconds=1e-9),
    Candidate("n", {"lr": 0.1, "opt": "sgd"}, epochs=3, model_features={"log_params": 9.0, "depth": 4.0}),
]


def test_make_features_is_unchanged_key_order_included() -> None:
    # The key order is the models' column order: it must not change either.
    candidates = [
        Candidate(m, {"lr": lr, "batch_size": bs, "opt": "sgd"}, epochs=e, prior_seconds=p)
        for m in MODELS
        for lr in (1e-3, 1e-2)
        for bs in (32, 64)
        for e in (1, 3, 50)
        for p in (None, 2.5 * e)
    ] + _ODD_CANDIDATES
    for task in [_task(3), *_ODD_TASKS]:
        for c in candidates:
            assert list(make_features(task, c).items()) == list(_make_features_before(task, c).items())


def test_candidate_block_rows_equal_make_features() -> None:
    candidates = [
        Candidate(m, {"lr": lr, "batch_size": bs, "opt": o}, epochs=e, model_features={"depth": 2.0})
        for m in MODELS
        for lr in (1e-3, 1e-2)
        for bs in (32, 64)
        for o in ("sgd", "adam")
        for e in (1, 3, 50)
    ] + _ODD_CANDIDATES
    block = CandidateBlock(candidates)  # made once, without priors: each task brings its own
    for k, task in enumerate([_task(3), *_ODD_TASKS]):
        priors = [None if i % 3 == k % 3 else 0.5 * i for i in range(len(candidates))]
        with_priors = [dataclasses.replace(c, prior_seconds=p) for c, p in zip(candidates, priors, strict=True)]
        rows = block.rows(task, priors, with_priors)
        dicts = [make_features(task, c) for c in with_priors]
        assert [list(x.items()) for x in rows] == [list(x.items()) for x in dicts]
        reference = FeatureRows(dicts)  # the matrix made from the dicts
        assert set(rows.names) == set(reference.names)
        for name in reference.names:
            assert np.array_equal(rows.column(name, -1.0), reference.column(name, -1.0)), name
        index = FeatureIndex()
        for x in dicts:
            index.add(x)
        width = len(index.columns)
        assert np.array_equal(rows.matrix_for(index.columns, width), index.matrix(dicts), equal_nan=True)


def test_predict_many_same_task_gives_the_same_predictions(samples: list) -> None:
    predictor = PREDICTORS["accuracy-gb"]()
    _learn(predictor, samples)
    task = _task(2)
    xs = [make_features(task, Candidate(m, {"lr": 1e-3, "batch_size": 64}, epochs=e)) for m in MODELS for e in (1, 5)]
    assert predictor.predict_many(xs, same_task=True) == predictor.predict_many(xs)


def _prior_before(predictor: AccuracyPredictor) -> tuple[float, float]:
    """The unseen task's level and spread as AccuracyPredictor computed them: one pass over all tasks."""
    from river import stats

    threshold = max(2.0, predictor.task_prior_weight)
    known = [v for v in predictor._tasks.values() if v.mean.n >= threshold]
    if not known:
        known = [v for v in predictor._tasks.values() if v.mean.n >= 2]
    levels, spreads = stats.Mean(), stats.Mean()
    for v in known:
        levels.update(v.mean.get())
        spreads.update(math.sqrt(v.get()))
    if levels.n:
        return levels.get(), max(spreads.get(), predictor.min_spread)
    return predictor.prior_accuracy, 25.0


@pytest.mark.parametrize("weight", [30.0, 5.0, 0.0])
def test_incremental_task_prior_is_exactly_the_full_pass(weight: float) -> None:
    rng = random.Random(4)
    predictor = AccuracyPredictor(linear_model.LinearRegression(), task_prior_weight=weight)
    for i in range(400):
        # Old tasks come back (recomputed from their position on) and new ones arrive.
        task = _task(rng.randrange(1 + i // 8))
        x = make_features(task, Candidate("alpha", {"lr": 0.01}, epochs=1 + i % 5))
        predictor.learn_one(x, rng.uniform(20, 95))
        assert predictor._prior_scale() == _prior_before(predictor)
    restored = pickle.loads(pickle.dumps(predictor))  # the prior is rebuilt from the tasks
    assert restored._prior_scale() == predictor._prior_scale()
