"""Resumable runs: stopping after an epoch and continuing from a checkpoint equals never stopping.

A tiny pretrained model of the default zoo, real fine-tuning on a small slice of digits; each
stage resumes a FRESH model object from checkpoint bytes, as another worker would.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from worker import FinetuneSpec, TrainingCheckpoint, run_finetune  # noqa: E402

MODEL = "etnas-nas-074"  # ~8k parameters
URI = "builtin:digits?train=256&test=64"


def _model() -> torch.nn.Module:
    from zoo_store import create_model

    return create_model(MODEL)


def _spec(epochs: int = 3, **kw: object) -> FinetuneSpec:
    base: dict[str, object] = dict(epochs=epochs, lr=0.05, batch_size=32, num_threads=1, seed=3)
    base.update(kw)
    return FinetuneSpec(URI, **base)  # type: ignore[arg-type]


def _in_stages(spec: FinetuneSpec, stops: list[int]) -> tuple[object, torch.nn.Module]:
    """Train in stages, each ending at the next of ``stops`` (0: the end), through bytes."""
    checkpoint = None
    for stop in stops:
        if checkpoint is not None:
            checkpoint = TrainingCheckpoint.from_bytes(checkpoint.to_bytes())
        model = _model()
        result = run_finetune(spec, model, stop_after_epochs=stop, resume=checkpoint)
        checkpoint = result.checkpoint
        assert (checkpoint is None) == (stop == 0)
    return result, model


def _assert_same_run(straight: object, staged: object, model_a: torch.nn.Module, model_b: torch.nn.Module) -> None:
    assert [p.epoch for p in staged.curve] == [p.epoch for p in straight.curve]  # type: ignore[attr-defined]
    for a, b in zip(straight.curve, staged.curve, strict=True):  # type: ignore[attr-defined]
        assert b.accuracy == pytest.approx(a.accuracy, abs=1e-9)
        assert b.train_loss == pytest.approx(a.train_loss, abs=1e-5)
    assert staged.best_epoch == straight.best_epoch  # type: ignore[attr-defined]
    assert staged.accuracy == pytest.approx(straight.accuracy)  # type: ignore[attr-defined]
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_stopping_and_resuming_on_a_fresh_model_equals_one_straight_run(optimizer: str) -> None:
    spec = _spec(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.003)
    straight_model = _model()
    straight = run_finetune(spec, straight_model)
    assert straight.checkpoint is None and straight.epochs_completed == 3

    staged, staged_model = _in_stages(spec, [2, 0])
    assert staged.resumed_epochs == 2
    _assert_same_run(straight, staged, straight_model, staged_model)
    # One curve whose seconds keep counting across the stages.
    seconds = [p.seconds for p in staged.curve]
    assert seconds == sorted(seconds) and seconds[2] > seconds[1]


def test_three_stages_of_one_epoch_equal_one_straight_run() -> None:
    spec = _spec()
    straight_model = _model()
    straight = run_finetune(spec, straight_model)
    staged, staged_model = _in_stages(spec, [1, 2, 0])
    assert staged.resumed_epochs == 2 and staged.epochs_completed == 3
    _assert_same_run(straight, staged, straight_model, staged_model)


def test_checkpoint_round_trips_through_bytes_and_holds_the_run_state() -> None:
    model = _model()
    seen = []
    result = run_finetune(_spec(optimizer="adam", lr=0.003), model, progress=seen.append, stop_after_epochs=1)
    checkpoint = result.checkpoint
    assert checkpoint is not None and checkpoint.epoch == 1 and result.epochs_completed == 1
    assert checkpoint.curve == result.curve == tuple(seen)
    data = checkpoint.to_bytes()
    again = TrainingCheckpoint.from_bytes(data)
    assert again.to_bytes() == data
    assert again.epoch == 1 and again.curve == checkpoint.curve and again.scheduler == checkpoint.scheduler
    assert again.best_accuracy == checkpoint.best_accuracy and again.best_epoch == 1
    assert again.optimizer["param_groups"] == checkpoint.optimizer["param_groups"]  # Adam's betas a tuple again
    assert set(again.rng) == {"cpu"} and again.rng["cpu"].dtype == torch.uint8
    for key, value in checkpoint.weights.items():
        assert torch.equal(again.weights[key], value)
    # The checkpoint keeps the current weights; the returned model has the best ones (epoch 1 here).
    assert all(torch.equal(v, model.state_dict()[k].cpu()) for k, v in again.best_weights.items())
    assert b"pickle" not in data[:64] and data[8:9] == b"{"  # a safetensors header, not a pickle


def test_a_checkpoint_refuses_another_run_and_damaged_bytes() -> None:
    result = run_finetune(_spec(), _model(), stop_after_epochs=1)
    assert result.checkpoint is not None
    with pytest.raises(ValueError, match=r"belongs to another run: lr 0\.05 \(resumed with 0\.1\)"):
        run_finetune(_spec(lr=0.1), _model(), resume=result.checkpoint)
    with pytest.raises(ValueError, match="belongs to another run: epochs 3 \\(resumed with 4\\)"):
        run_finetune(_spec(epochs=4), _model(), resume=result.checkpoint)
    with pytest.raises(ValueError, match="model_structure"):
        run_finetune(_spec(), create_other_model(), resume=result.checkpoint)
    with pytest.raises(ValueError, match="already at epoch 1"):
        run_finetune(_spec(), _model(), resume=result.checkpoint, stop_after_epochs=1)
    data = result.checkpoint.to_bytes()
    for damaged in (data[: len(data) // 2], b"\0" * 7, data[:8] + b"{not json" + data[17:]):
        with pytest.raises(ValueError, match="not a training checkpoint"):
            TrainingCheckpoint.from_bytes(damaged)


def create_other_model() -> torch.nn.Module:
    from zoo_store import create_model

    return create_model("etnas-nas-057")


def test_a_resumed_run_has_its_own_deadline() -> None:
    result = run_finetune(_spec(epochs=200), _model(), stop_after_epochs=1)
    resumed = run_finetune(_spec(epochs=200, deadline_seconds=1.5), _model(), resume=result.checkpoint)
    assert resumed.stopped_by_deadline and resumed.checkpoint is None
    assert 1 < resumed.epochs_completed < 200 and resumed.seconds <= 1.5 + 0.25
    assert resumed.curve[0] == result.curve[0]


def test_each_epochs_data_order_is_a_pure_function_of_seed_and_epoch() -> None:
    from worker._finetune import EpochShuffle

    def order(seed: int, epoch: int) -> list[int]:
        shuffle = EpochShuffle(50, seed)
        shuffle.set_epoch(epoch)
        return list(shuffle)

    assert order(0, 2) == order(0, 2) and sorted(order(0, 2)) == list(range(50))
    assert order(0, 2) != order(0, 3) and order(0, 2) != order(1, 2)


_CUDA_CHECK = """
import sys
import torch
sys.path.insert(0, "tests")
from test_resume import _model, _spec
from worker import TrainingCheckpoint, run_finetune
torch.use_deterministic_algorithms(True)  # CUDA's default kernels add in any order
torch.backends.cudnn.benchmark = False
spec = _spec()
straight_model = _model()
straight = run_finetune(spec, straight_model, device="cuda")
first = run_finetune(spec, _model(), device="cuda", stop_after_epochs=1)
assert first.checkpoint is not None and set(first.checkpoint.rng) == {"cpu", "cuda"}
checkpoint = TrainingCheckpoint.from_bytes(first.checkpoint.to_bytes())
resumed_model = _model()
resumed = run_finetune(spec, resumed_model, device="cuda", resume=checkpoint)
assert [p.accuracy for p in resumed.curve] == [p.accuracy for p in straight.curve], (resumed.curve, straight.curve)
for key, value in straight_model.state_dict().items():
    torch.testing.assert_close(resumed_model.state_dict()[key], value, atol=1e-5, rtol=1e-5, msg=key)
on_cpu = run_finetune(spec, _model(), device="cpu", resume=checkpoint)  # another kind of worker
assert on_cpu.epochs_completed == 3 and on_cpu.curve[0] == first.curve[0]
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resuming_on_cuda_equals_a_straight_cuda_run_and_the_cpu_can_continue_it() -> None:
    # A fresh process: cuBLAS reads its deterministic workspace setting when it starts.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH", "")]))}
    done = subprocess.run([sys.executable, "-c", _CUDA_CHECK], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
