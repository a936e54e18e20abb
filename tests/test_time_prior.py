"""The learned time prior of models without a zoo profile (``ModelTimePrior`` in ``TimePredictor``)."""

from __future__ import annotations

import logging
import math
import pickle
import random

import numpy as np
import pytest

from adaptor_service import Adaptor, TimePredictor, make_features, open_store
from adaptor_service._predictors import CandidateBlock, ModelTimePrior
from adaptor_service._snapshots import SNAPSHOT_FORMAT
from nasoa_contracts import Candidate, CurvePoint, Observation, TaskSpec

BATCHES = (16, 64, 256)


def _task(num_samples: float) -> TaskSpec:
    return TaskSpec(f"experience:n{int(num_samples)}", 3600.0, {"num_samples": num_samples, "num_classes": 10.0},
                    task_id=f"n{int(num_samples)}")


def _world(models: int, seed: int) -> dict[str, float]:
    """Each model's true log seconds per sample-epoch at batch size 1: spread 0.8 around log(1 ms)."""
    rng = random.Random(seed)
    return {f"m{i}": math.log(1e-3) + rng.gauss(0.0, 0.8) for i in range(models)}


SLOPE = -0.4  # a bigger batch is cheaper per sample


def _seconds(rate: float, num_samples: float, batch: int, epochs: int, noise: float) -> float:
    return epochs * num_samples * math.exp(rate + SLOPE * math.log(batch) + noise)


def _stream(world: dict[str, float], n: int, seed: int, noise: float = 0.2) -> list[tuple[dict[str, float], float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        model = rng.choice(sorted(world))
        num_samples, batch, epochs = rng.choice([500.0, 5000.0, 50000.0]), rng.choice(BATCHES), rng.choice([1, 3, 10])
        x = make_features(_task(num_samples), Candidate(model, {"lr": 0.01, "batch_size": batch}, epochs=epochs))
        out.append((x, _seconds(world[model], num_samples, batch, epochs, rng.gauss(0.0, noise))))
    return out


def test_a_seen_models_rate_converges_to_its_true_rate() -> None:
    world = _world(20, seed=0)
    prior = ModelTimePrior()
    for x, seconds in _stream(world, 4000, seed=1):
        prior.learn_one(x, seconds)
    pooled = prior.pooled()
    assert pooled is not None
    assert pooled.slope == pytest.approx(SLOPE, abs=0.03)
    errors = [abs(pooled.rate[prior.position(m)] - rate) for m, rate in world.items()]
    assert max(errors) < 0.1  # about 200 results each: within 10 %
    assert pooled.between_var == pytest.approx(np.var(list(world.values()), ddof=1), rel=0.5)


def test_a_model_seen_once_is_shrunk_to_the_mean_over_models() -> None:
    world = _world(20, seed=2)
    prior = ModelTimePrior()
    for x, seconds in _stream(world, 2000, seed=3):
        prior.learn_one(x, seconds)
    x = make_features(_task(5000.0), Candidate("fast", {"lr": 0.01, "batch_size": 64}, epochs=1))
    prior.learn_one(x, _seconds(math.log(1e-3) - 2.0, 5000.0, 64, 1, 0.5))  # far below the others, noisy
    pooled = prior.pooled()
    assert pooled is not None
    own = math.log(_seconds(math.log(1e-3) - 2.0, 5000.0, 64, 1, 0.5)) - math.log(5000.0) - pooled.slope * math.log(64)
    shrunk = pooled.rate[prior.position("fast")]
    assert own < shrunk < pooled.mean_rate  # between its own result and the mean over models
    assert pooled.rate_var[prior.position("fast")] < pooled.unseen_var


def test_an_unseen_models_time_is_the_pooled_mean_with_a_wider_spread() -> None:
    world = _world(20, seed=4)
    predictor = TimePredictor(seed=0)
    for x, seconds in _stream(world, 3000, seed=5):
        predictor.learn_one(x, seconds)
    predictor.refit()
    task, regime = _task(20000.0), {"lr": 0.01, "batch_size": 64}
    seen = make_features(task, Candidate("m3", regime, epochs=5))
    unseen = make_features(task, Candidate("never-seen", regime, epochs=5))
    (seen_s, seen_std), (unseen_s, unseen_std) = predictor.predict_many([seen, unseen])
    assert abs(math.log(seen_s / _seconds(world["m3"], 20000.0, 64, 5, 0.0))) < 0.15
    assert seen_std / seen_s < unseen_std / unseen_s  # the relative spread widens
    typical = _seconds(float(np.mean(list(world.values()))), 20000.0, 64, 5, 0.0)
    assert abs(math.log(unseen_s / typical)) < 0.5  # the mean over models, not a guess of the trees
    _, seen_log_std = predictor.predict_log_dist(seen)
    _, unseen_log_std = predictor.predict_log_dist(unseen)
    assert unseen_log_std**2 - seen_log_std**2 > 0.3  # about the variance between models (0.64)


def test_rows_with_a_zoo_prior_are_predicted_as_without_the_learned_prior() -> None:
    """A stream of zoo-profiled candidates only: the learned prior changes nothing at all."""
    rng = random.Random(6)
    samples = []
    for _ in range(300):
        task, epochs = _task(rng.choice([500.0, 5000.0])), rng.choice([1, 3, 10])
        candidate = Candidate(rng.choice(["a", "b"]), {"lr": 0.01, "batch_size": 64}, epochs=epochs,
                              prior_seconds=2.0 * epochs)
        samples.append((make_features(task, candidate), 2.0 * epochs * math.exp(rng.gauss(0.3, 0.2))))
    with_prior, without = TimePredictor(seed=0), TimePredictor(seed=0, model_prior=False)
    for x, seconds in samples:
        with_prior.learn_one(x, seconds)
        without.learn_one(x, seconds)
    xs = [x for x, _ in samples[:50]]
    assert with_prior.predict_many(xs) == without.predict_many(xs)


def test_matrix_rows_agree_with_dicts_for_zoo_seen_and_unseen_models() -> None:
    world = _world(5, seed=7)
    predictor = TimePredictor(seed=0)
    for x, seconds in _stream(world, 500, seed=8):
        predictor.learn_one(x, seconds)
    task = _task(3000.0)
    candidates = [Candidate(m, {"lr": 0.01, "batch_size": b}, epochs=e, prior_seconds=p)
                  for m in ("m0", "m4", "new") for b in BATCHES for e in (1, 4) for p in (None, 9.0)]
    rows = CandidateBlock(candidates).rows(task, [c.prior_seconds for c in candidates], candidates)
    expected = [predictor.predict_dist(make_features(task, c)) for c in candidates]
    seconds, std = predictor.predict_arrays(rows)
    np.testing.assert_allclose(seconds, [s for s, _ in expected], rtol=1e-12)
    np.testing.assert_allclose(std, [s for _, s in expected], rtol=1e-12)


def _observation(i: int, world: dict[str, float], rng: random.Random) -> Observation:
    model = rng.choice(sorted(world))
    num_samples, batch = rng.choice([500.0, 5000.0]), rng.choice(BATCHES)
    per_epoch = _seconds(world[model], num_samples, batch, 1, rng.gauss(0.0, 0.1))
    curve = tuple(CurvePoint(e, 40.0 + 5 * e, per_epoch * e) for e in (1, 2, 3))
    candidate = Candidate(model, {"lr": 0.01, "batch_size": batch}, epochs=3)
    return Observation(f"r{i}", _task(num_samples), candidate, curve[-1].accuracy, curve[-1].seconds, curve)


def _live_adaptor(url: str, snap) -> tuple[Adaptor, TaskSpec, list[Candidate]]:  # type: ignore[no-untyped-def]
    world, rng = _world(6, seed=9), random.Random(10)
    live = Adaptor(open_store(url), snapshot_path=snap, snapshot_every=7, validate_requests=False)
    for i in range(30):  # snapshots at 7, 14, 21, 28; the last 2 are only in the log
        live.observe(_observation(i, world, rng), job=None)
    candidates = [Candidate(m, {"lr": 0.01, "batch_size": 64}, epochs=4) for m in (*sorted(world), "unseen")]
    return live, _task(2000.0), candidates


def test_a_restart_from_snapshot_and_log_predicts_the_same_times(tmp_path) -> None:
    url, snap = f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "adaptor.snapshot"
    live, task, candidates = _live_adaptor(url, snap)
    expected = live.predict(task, candidates)
    restarted = Adaptor(open_store(url), snapshot_path=snap, snapshot_every=7, validate_requests=False)
    assert restarted.state.n_learned == 30 and restarted.state.time._prior.pooled() is not None
    assert restarted.predict(task, candidates) == expected
    assert expected[-1].seconds_std / expected[-1].seconds > expected[0].seconds_std / expected[0].seconds


def test_a_snapshot_of_the_previous_format_is_refused_and_the_log_relearned(tmp_path, caplog) -> None:
    url, snap = f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "adaptor.snapshot"
    live, task, candidates = _live_adaptor(url, snap)
    payload = pickle.loads(snap.read_bytes())
    snap.write_bytes(pickle.dumps({**payload, "format": SNAPSHOT_FORMAT - 1}))  # before the learned time prior
    with caplog.at_level(logging.WARNING, logger="nasoa.adaptor"):
        restarted = Adaptor(open_store(url), snapshot_path=snap, snapshot_every=7, validate_requests=False)
    assert f"is not of format {SNAPSHOT_FORMAT}: relearning from the log" in caplog.text
    assert restarted.predict(task, candidates) == live.predict(task, candidates)
