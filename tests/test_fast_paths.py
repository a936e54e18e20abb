"""The Recommend and Observe fast paths give what the plain paths give.

Recommend over the candidate space caches a task's feature matrix, predicts on arrays (with
trees cut down to the task) and shortlists before the one-shot generator; Observe can learn
in a background thread. Each must change nothing but the time taken.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from adaptor_service import Adaptor, open_store
from adaptor_service._estimators import BatchRefitRegressor
from adaptor_service._fast_trees import _SMALL_BATCH, _one_thread, _predict_fixing_constants
from adaptor_service._known_runs import correct_accuracy, correct_seconds
from adaptor_service._learner import accuracy_at
from adaptor_service._predictors import CandidateBlock, make_features
from adaptor_service._schedulers import OneShotGenerator, RandomGenerator, ScoredCandidate
from benchmarks._service_bench import benchmark_space
from nasoa_contracts import CurvePoint, Observation, Prediction, TaskSpec


@pytest.fixture(scope="module")
def space():
    return benchmark_space(2)  # 2 models x 504 regimes: enough rows for the array paths


def _task(i: int, budget: float = 30.0) -> TaskSpec:
    return TaskSpec(f"builtin:digits?seed={i % 3}", budget, {"num_samples": 500.0 + 97 * i, "num_classes": 10.0})


def _observations(space, start: int, n: int) -> list[Observation]:
    out = []
    for i in range(start, start + n):
        task = _task(i)
        c = space.candidates(task)[(i * 31) % 500]
        acc, secs = 40.0 + (i * 17) % 55, 2.0 + (i * 7) % 30
        curve = tuple(CurvePoint(e, acc * e / c.epochs, secs * e / c.epochs) for e in range(1, c.epochs + 1))
        out.append(Observation(f"obs-{i}", task, c, acc, secs, curve))
    return out


def _plain_plan(adaptor: Adaptor, generator, task: TaskSpec, top_k: int = 5):
    """The plan from every candidate's feature dict (no cache, no feature block, no shortlist)."""
    candidates = adaptor.candidate_space.candidates(task)
    xs = [make_features(task, c) for c in candidates]
    acc, acc_std = adaptor.state.accuracy.predict_arrays(xs)
    sec, sec_std = adaptor.state.time.predict_arrays(xs)
    # Runs measured on the task are corrected by their curves, whatever the path.
    measured = [(i, candidates[i], curve) for i, curve in adaptor.state.known_runs.matches(task, candidates)]
    correct_seconds(measured, sec, sec_std)
    correct_accuracy(measured, acc, acc_std, accuracy_at(adaptor.state, task))
    predictions = [Prediction(*p) for p in zip(acc, acc_std, sec, sec_std, strict=True)]
    scored = [ScoredCandidate(c, p) for c, p in zip(candidates, predictions, strict=True)]
    prior_rows = adaptor.planner._best_prior_rows(task, candidates, adaptor.time_margin, measured)  # the hedge, whatever the path
    if prior_rows is not None:
        scored = [scored[i] for i in prior_rows]
    return generator.choose(task, scored, adaptor.time_margin, top_k)


@pytest.mark.parametrize("options", [{}, {"exploration": 0.5, "seed": 3}])
def test_space_recommend_equals_the_plain_path_cold_and_after_refits(space, options):
    adaptor = Adaptor.in_memory(candidate_space=space, generator=OneShotGenerator(**options))
    reference = OneShotGenerator(**options)  # its exploration coin stays in step with the adaptor's
    learned = 0
    for n in (0, 12, 40):  # cold (prior), starter model, boosting refits
        adaptor.warm_start(_observations(space, learned, n - learned))
        learned = n
        for i in range(12):
            # Tasks come back with other budgets: the cached matrix must serve them all.
            task = _task(i % 4, budget=5.0 + 9 * i)
            assert adaptor.recommend(task, top_k=i % 4) == _plain_plan(adaptor, reference, task, i % 4 or 5)
    assert adaptor.state.known_runs.of_task(_task(1)), "the tasks asked for have measured runs"


def test_other_generators_see_every_candidate(space):
    adaptor = Adaptor.in_memory(candidate_space=space, generator=RandomGenerator(seed=5))
    adaptor.warm_start(_observations(space, 0, 20))
    reference = RandomGenerator(seed=5)
    for i in range(5):
        assert adaptor.recommend(_task(i)) == _plain_plan(adaptor, reference, _task(i))


def test_cached_predictions_follow_each_refit(space):
    adaptor = Adaptor.in_memory(candidate_space=space)
    adaptor.warm_start(_observations(space, 0, 15))
    task = _task(50)  # no measured run: its plan comes from the models alone
    before = adaptor.recommend(task)
    model = adaptor.state.accuracy._model
    fits = model._n_fits
    stream = iter(_observations(space, 100, 200))
    while model._n_fits == fits:  # learn until the boosting model is refit
        adaptor.observe(next(stream))
    after = adaptor.recommend(task)
    assert after == _plain_plan(adaptor, OneShotGenerator(), task)
    assert after.prediction != before.prediction


def test_feature_rows_match_the_feature_dicts(space):
    task = _task(2)
    table = space.table(task)
    xs = [make_features(task, c) for c in table]
    rows = CandidateBlock(table.templates).rows(task, table.priors, table)
    assert len(rows) == len(xs) and rows[0] == xs[0] and rows[7] == xs[7] and list(rows) == xs
    adaptor = Adaptor.in_memory(candidate_space=space)
    adaptor.warm_start(_observations(space, 0, 30))
    for predictor in (adaptor.state.accuracy, adaptor.state.time):
        index = predictor._model._index
        width = predictor._model._columns_fitted
        assert np.array_equal(rows.matrix_for(index.columns, width), index.matrix(xs)[:, :width], equal_nan=True)
    assert adaptor.state.time.predict_many(rows) == adaptor.state.time.predict_many(xs)
    assert adaptor.state.accuracy.predict_many(rows, same_task=True) == adaptor.state.accuracy.predict_many(xs)


def test_trees_cut_to_the_constant_columns_predict_the_same(space):
    adaptor = Adaptor.in_memory(candidate_space=space)
    adaptor.warm_start(_observations(space, 0, 30))
    for predictor in (adaptor.state.accuracy, adaptor.state.time):
        regressor = predictor._model
        (member,) = regressor._members
        for i in (0, 5):
            task = _task(i)
            xs = [make_features(task, c) for c in space.candidates(task)]
            X = regressor._index.matrix(xs)[:, : regressor._columns_fitted]
            X[:, 0] = np.nan  # an all-missing column is constant too
            X[::3, 1] = np.nan
            with _one_thread():
                assert np.array_equal(_predict_fixing_constants(member, X), member.predict(X))


def test_candidate_table_makes_the_space_candidates(space):
    task = _task(3)
    table = space.table(task)
    assert table.materialize() == space.candidates(task) == list(table)
    assert table[2:5] == space.candidates(task)[2:5]


def test_background_learning_reaches_the_inline_state(tmp_path, space):
    observations = _observations(space, 0, 60)
    inline = Adaptor.in_memory(candidate_space=space)
    inline.warm_start(observations)
    snap = tmp_path / "a.snapshot"
    url = f"sqlite:///{tmp_path / 'a.db'}"
    background = Adaptor(open_store(url), space, snapshot_path=snap, snapshot_every=25, learn_in_background=True)
    assert background.warm_start(observations) == 60
    assert background.observe(observations[3]) is False  # idempotent before it is learned
    assert background.flush(timeout=120)
    probe = space.candidates(_task(7))[::50]
    assert background.predict(_task(7), probe) == inline.predict(_task(7), probe)
    assert background.time_margin == inline.time_margin
    assert background.stats().accuracy_mae == inline.stats().accuracy_mae
    background.close()
    # A restart learns what the last snapshot (at 50) lacks from the log, the same way.
    restarted = Adaptor(open_store(url), space, snapshot_path=snap, learn_in_background=True)
    assert restarted.predict(_task(7), probe) == inline.predict(_task(7), probe)
    restarted.close()


def test_learner_waits_for_a_pause_unless_flushed(space):
    adaptor = Adaptor.in_memory(candidate_space=space, learn_in_background=True, learn_pause_seconds=30)
    assert adaptor.observe(_observations(space, 0, 1)[0])
    time.sleep(0.2)
    assert adaptor.state.n_learned == 0  # recorded, not learned: the stream may go on
    assert adaptor.flush(timeout=60) is True  # a flush makes the learner go on at once
    assert adaptor.state.n_learned == 1
    adaptor.close()


def test_only_candidates_that_can_enter_the_plan_get_an_accuracy(space, monkeypatch):
    # Budgets past the service's bounds (1e-3 s, 1e6 s) reach the fast path's extremes.
    adaptor = Adaptor.in_memory(candidate_space=space, validate_requests=False)
    adaptor.warm_start(_observations(space, 0, 40))
    adaptor.state.hedge.min_tasks = 10**9  # the predictors plan (best-prior's rows: tests/test_generalisation.py)
    table = space.table(_task(5))
    seconds = np.array([p.seconds for p in adaptor.predict(_task(5), list(table))])
    half = float(np.median(seconds)) * adaptor.time_margin  # about half the candidates fit
    predicted = []
    predict = adaptor.state.accuracy.predict_arrays

    def counting(rows, **kwargs):
        predicted.append(len(rows))
        return predict(rows, **kwargs)

    monkeypatch.setattr(adaptor.state.accuracy, "predict_arrays", counting)
    for budget in (1e-3, half, 1e6):  # none fit, half fit, all fit
        plan = adaptor.recommend(_task(5, budget), top_k=3)
        assert plan == _plain_plan(adaptor, OneShotGenerator(), _task(5, budget), 3)
    none, half, every = predicted[::2]  # the others are the plain plans'
    assert none == every == len(table) and len(table) // 3 < half < len(table) * 2 // 3
    # A part of the rows is the same as the dicts of those candidates.
    rows = CandidateBlock(table.templates).rows(_task(5), table.priors, table)
    index = np.array([3, 500, 900])
    part = rows.take(index, make_features(_task(5), table[3]))
    assert list(part) == [make_features(_task(5), table[i]) for i in index.tolist()] and part[0] == list(part)[0]
    assert np.array_equal(part.values, rows.values[index], equal_nan=True)


def test_a_shortlist_is_predicted_once_per_fit_row_by_row_in_the_rows_it_was_taken_from(space, monkeypatch):
    adaptor = Adaptor.in_memory(candidate_space=space, validate_requests=False)
    adaptor.warm_start(_observations(space, 0, 40))  # past the starter: the batch models read rows
    adaptor.state.hedge.min_tasks = 10**9  # the predictors plan, with their shortlist
    model = adaptor.state.accuracy._model
    rows_predicted: list[int] = []
    predict = BatchRefitRegressor._predict_members

    def counted(self: BatchRefitRegressor, X: np.ndarray) -> np.ndarray:
        if self is model:
            rows_predicted.append(len(X))
        return predict(self, X)

    monkeypatch.setattr(BatchRefitRegressor, "_predict_members", counted)
    budgets = (8.0, 20.0, 45.0, 120.0)
    for budget in budgets:  # shortlists that overlap: a row already predicted is not predicted again
        adaptor.recommend(_task(7, budget), top_k=3)
    first = sum(rows_predicted)
    assert 0 < first < len(space.table(_task(7)))
    rows_predicted.clear()
    # Planned again (a budget a microsecond longer: not the cached plan), the same shortlists
    # from the same fit: nothing is predicted, and the plans are those of every row's dict.
    plans = [adaptor.recommend(_task(7, budget + 1e-6), top_k=3) for budget in budgets]
    assert rows_predicted == []
    for budget, plan in zip(budgets, plans, strict=True):
        assert plan == _plain_plan(adaptor, OneShotGenerator(), _task(7, budget + 1e-6), 3)


def test_walking_the_trees_gives_scikit_learns_predictions():
    # A few rows are predicted by walking the trees in Python: the same numbers as scikit-learn's predict.
    model = BatchRefitRegressor(min_samples=50, max_iter=30, min_samples_leaf=2)
    rng = np.random.default_rng(0)
    xs = []
    for i in range(120):
        x = {"a": float(rng.normal()), "m=x": float(i % 2)}
        if i % 3:
            x["b"] = float(rng.normal())  # missing in a third of the rows: NaN goes its learnt way
        xs.append(x)
        model.learn_one(x, 3 * x["a"] + x.get("b", -1.0) + x["m=x"])
    X = model._index.matrix(xs[:_SMALL_BATCH])[:, : model._columns_fitted]
    walked = model._predict_members(X)
    assert np.array_equal(walked[0], model._members[0].predict(X))


def test_cached_rows_weigh_their_dicts_once_a_model_made_them(space):
    from adaptor_service._planner import _LRU, _rows_bytes

    entries = []
    for i in range(2):
        table = space.table(_task(i))
        entries.append((table, CandidateBlock(table.templates).rows(_task(i), table.priors, table)))
    matrix_only = _rows_bytes(entries[0])
    cache = _LRU(8, max_bytes=3 * matrix_only, weigh=_rows_bytes)
    for i, entry in enumerate(entries):
        entry[1].on_dicts = cache.reweigh
        cache.put(i, entry)
    assert cache.get(0) is not None and cache.get(1) is not None  # two matrices fit
    list(entries[1][1])  # a River model reads task 1's rows as dicts: they now weigh five matrices
    assert _rows_bytes(entries[1]) > 3 * matrix_only
    assert cache.nbytes <= 3 * matrix_only and cache.get(0) is None and cache.get(1) is None


def test_best_prior_scored_once_per_run_picks_the_rows_it_picks_per_candidate(space, monkeypatch):
    from dataclasses import replace

    from adaptor_service._hedge import BEST_PRIOR
    from adaptor_service._schedulers import RunIndex

    adaptor = Adaptor.in_memory(candidate_space=space)
    adaptor.warm_start(_observations(space, 0, 30))
    hedge = adaptor.state.hedge
    decision = hedge.decide(30.0, 1.0)
    monkeypatch.setattr(hedge, "decide", lambda *args: replace(decision, policy=BEST_PRIOR))
    for i in range(3):
        task = _task(10 + i, budget=20.0 * (i + 1))
        templates = space.table(task).templates
        every = adaptor.planner._best_prior_rows(task, templates, 1.0, [])
        for _ in range(2):  # the second time from the kept encoding
            per_run = adaptor.planner._best_prior_rows(task, templates, 1.0, [], RunIndex.of(templates), "space")
            assert len(every) and per_run.tolist() == every.tolist()


def test_a_task_planned_again_reuses_its_plan_until_something_is_learned(space, monkeypatch):
    adaptor = Adaptor.in_memory(candidate_space=space)
    adaptor.warm_start(_observations(space, 0, 40))
    task = _task(60)
    first = adaptor.recommend(task)
    predicted = []
    original = type(adaptor.state.accuracy).predict_arrays
    monkeypatch.setattr(type(adaptor.state.accuracy), "predict_arrays",
                        lambda self, *a, **k: predicted.append(1) or original(self, *a, **k))
    assert adaptor.recommend(task) == first and adaptor.submit(task).plan == first
    assert not predicted, "nothing was learned: the plan is reused"
    assert adaptor.recommend(_task(60, budget=45.0)) != first and predicted, "another budget is another plan"
    adaptor.observe(_observations(space, 200, 1)[0])
    predicted.clear()
    again = adaptor.recommend(task)
    assert predicted, "a result was learned: the task is planned again"
    assert again == _plain_plan(adaptor, OneShotGenerator(), task)


def test_best_prior_scores_of_kept_vectors_follow_each_learnt_run():
    """The ranker keeps the last vectors' neighbours only while no run is learnt."""
    from adaptor_service._best_prior import BestPriorRanker

    ranker = BestPriorRanker(k=3)
    configs = [(f"m{i % 4}", {"lr": 0.001 * (1 + i % 7), "epochs": 1 + i % 5}) for i in range(40)]

    def learn(i: int) -> None:
        model, hparams = configs[i % len(configs)]
        ranker.learn_run(f"task-{i % 6}", model, hparams, [CurvePoint(1, 30.0 + (i * 37) % 60, 5.0 + i % 9)])

    for i in range(30):
        learn(i)
    vectors = ranker.encode(configs)
    for i in range(30, 40):
        kept = ranker.score(configs, 60.0, vectors)
        np.testing.assert_array_equal(ranker.score(configs, 60.0, vectors), kept)
        np.testing.assert_array_equal(kept, ranker.score(configs, 60.0))  # as encoded afresh
        learn(i)
        np.testing.assert_array_equal(ranker.score(configs, 60.0, vectors), ranker.score(configs, 60.0))


def test_prepare_builds_what_every_task_shares_before_the_first_request(space, monkeypatch):
    from adaptor_service import _planner

    adaptor = Adaptor.in_memory(candidate_space=space)
    adaptor.warm_start(_observations(space, 0, 40))
    adaptor.prepare()
    built = []
    monkeypatch.setattr(_planner, "CandidateBlock", lambda *a: built.append(a) or CandidateBlock(*a))
    monkeypatch.setattr(_planner.RunIndex, "of", classmethod(lambda cls, *a: built.append(a)))
    plan = adaptor.recommend(_task(80))
    assert not built, "the first request found the space's block and runs built"
    assert plan == _plain_plan(adaptor, OneShotGenerator(), _task(80))


def test_a_background_refit_predicts_the_cached_tasks_before_the_swap(space, monkeypatch):
    observations = _observations(space, 0, 80)
    inline = Adaptor.in_memory(candidate_space=space)
    background = Adaptor.in_memory(candidate_space=space, learn_in_background=True, learn_pause_seconds=30)
    tasks = [_task(40 + i) for i in range(3)]  # no measured runs: plans from the models alone
    for adaptor in (inline, background):
        adaptor.warm_start(observations[:40])  # past the starter model: the batch models read rows
        for task in tasks:
            adaptor.recommend(task)
    model = background.state.time._model
    fits = model._n_fits
    stream = iter(observations[40:])
    while model._n_fits == fits:  # until the time model is refit once (its rows were read before)
        obs = next(stream)
        inline.observe(obs)
        background.observe(obs)
        assert background.flush(timeout=120)
    predicted_by_readers: list[BatchRefitRegressor] = []
    predict = BatchRefitRegressor._predict_members

    def counted(self: BatchRefitRegressor, X: np.ndarray) -> np.ndarray:
        predicted_by_readers.append(self)
        return predict(self, X)

    monkeypatch.setattr(BatchRefitRegressor, "_predict_members", counted)
    for task in tasks:
        assert background.recommend(task) == inline.recommend(task)
    assert not any(m is model for m in predicted_by_readers), "the new fit predicted the cached rows before the swap"
