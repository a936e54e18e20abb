"""Common checks over every predictor configuration, and small learning tests that can fail.

River runs the same checks on each of its estimators (clone, repr, pickling, seeding); we
add the one it lacks: after a pickle round trip, the predictions are equal.
"""

from __future__ import annotations

import inspect
import math
import pickle
import random
from collections.abc import Callable

import pytest
from river import linear_model

from adaptor_service._predictors import (
    AccuracyPredictor,
    BatchRefitRegressor,
    FeatureIndex,
    TimePredictor,
    make_features,
)
from adaptor_service._types import Candidate, TaskSpec

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


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_init_arguments_are_stored_as_is(name: str) -> None:
    predictor = PREDICTORS[name]()
    for param in inspect.signature(type(predictor).__init__).parameters:
        if param != "self":
            assert hasattr(predictor, param), f"{name}: init argument {param!r} is not stored"
    if getattr(predictor, "regressor", None) is not None:
        assert predictor._model is not predictor.regressor  # cloned, never modified


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_clone_and_repr(name: str, samples: list) -> None:
    predictor = PREDICTORS[name]()
    _learn(predictor, samples)
    fresh = predictor.clone()
    assert type(fresh) is type(predictor)
    assert repr(fresh) == repr(predictor)
    assert repr(predictor).startswith(type(predictor).__name__ + "(")
    x = samples[0][0]
    assert fresh.predict_dist(x) == PREDICTORS[name]().predict_dist(x)  # unfitted, like new


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_pickle_round_trip_gives_equal_predictions(name: str, samples: list) -> None:
    predictor = PREDICTORS[name]()
    _learn(predictor, samples)
    twin = pickle.loads(pickle.dumps(predictor))
    xs = [x for x, _, _ in samples[:40]]
    assert twin.predict_many(xs) == predictor.predict_many(xs)
    assert [twin.predict_dist(x) for x in xs] == [predictor.predict_dist(x) for x in xs]
    # and both keep learning the same way
    more = _samples(40, seed=9)
    _learn(predictor, more)
    _learn(twin, more)
    assert twin.predict_many(xs) == predictor.predict_many(xs)


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


def test_make_features_many_equals_make_features() -> None:
    from adaptor_service._predictors import make_features_many

    task = _task(3)
    candidates = [
        Candidate(m, {"lr": lr, "batch_size": bs, "opt": "sgd"}, epochs=e, prior_seconds=p)
        for m in MODELS
        for lr in (1e-3, 1e-2)
        for bs in (32, 64)
        for e in (1, 3, 50)
        for p in (None, 2.5 * e)
    ]
    fast = make_features_many(task, candidates)
    slow = [make_features(task, c) for c in candidates]
    assert [list(x.items()) for x in fast] == [list(x.items()) for x in slow]


def test_predict_many_same_task_gives_the_same_predictions(samples: list) -> None:
    predictor = PREDICTORS["accuracy-gb"]()
    _learn(predictor, samples)
    task = _task(2)
    xs = [make_features(task, Candidate(m, {"lr": 1e-3, "batch_size": 64}, epochs=e)) for m in MODELS for e in (1, 5)]
    assert predictor.predict_many(xs, same_task=True) == predictor.predict_many(xs)
