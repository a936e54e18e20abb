"""Fine-tuning under a deadline (worker._finetune), with a tiny stand-in for the zoo's models."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from nasoa_data import DatasetError  # noqa: E402
from worker._finetune import (  # noqa: E402
    EpochProgress,
    FinetuneCancelled,
    FinetuneResult,
    FinetuneSpec,
    run_finetune,
)

DIGITS = "builtin:digits"
SMALL = "builtin:digits?train=320&test=100"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyNet(nn.Module):
    """The interface run_finetune needs from a zoo model, in ~20k parameters."""

    def __init__(self, width: int = 16, num_classes: int = 20) -> None:
        super().__init__()
        self.stem = _block(3, width)
        self.stage1 = _block(width, 2 * width)
        self.stage2 = _block(2 * width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stage2(self.stage1(self.stem(x)))).flatten(1))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes)

    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.stem], [self.stage1], [self.stage2]]


def _model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def _spec(uri: str = SMALL, **kw: object) -> FinetuneSpec:
    base: dict[str, object] = dict(epochs=1, lr=0.1, batch_size=32, num_threads=1)
    base.update(kw)
    return FinetuneSpec(uri, **base)  # type: ignore[arg-type]


def test_finetune_on_digits_learns_and_reports_each_epoch() -> None:
    seen: list[EpochProgress] = []
    result = run_finetune(_spec(DIGITS, epochs=2), _model(), progress=seen.append)
    assert isinstance(result, FinetuneResult)
    assert result.num_classes == 10 and result.epochs_completed == 2
    assert not result.stopped_by_deadline
    assert [p.epoch for p in seen] == [1, 2] and tuple(seen) == result.curve
    # The curve is validation; the kept epoch is the best of it; the test split is scored apart.
    assert result.validation_accuracy == max(p.accuracy for p in seen)
    assert seen[result.best_epoch - 1].accuracy == result.validation_accuracy
    assert result.split_sizes == (1078, 269, 450) and result.class_names == tuple("0123456789")
    assert result.accuracy > 60, result  # chance is 10 %
    assert seen[0].seconds < seen[1].seconds <= result.seconds
    assert seen[1].train_loss < seen[0].train_loss
    assert all(0 <= p.accuracy <= 100 and math.isfinite(p.train_loss) for p in seen)


def test_best_validation_weights_are_kept_and_scored_once_on_test() -> None:
    import nasoa_data

    model = _model()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(p: EpochProgress) -> None:
        snapshots[p.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    # A large constant-ish learning rate makes the validation curve go up and down.
    result = run_finetune(_spec(DIGITS, epochs=4, lr=0.8), model, progress=snapshot)
    accuracies = [p.accuracy for p in result.curve]
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1
    kept = snapshots[result.best_epoch]
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())
    # The reported accuracy is the test split's on exactly these weights.
    test = nasoa_data.make_torch_splits(DIGITS).test
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.inference_mode():
        correct = int((model(x).argmax(1) == y).sum())
    assert result.accuracy == pytest.approx(100.0 * correct / len(test))


def test_finetune_is_deterministic_and_keeps_the_callers_rng() -> None:
    a_model, b_model = _model(), _model()
    a = run_finetune(_spec(), a_model)
    b = run_finetune(_spec(), b_model)
    assert a.accuracy == b.accuracy and a.curve[0].train_loss == b.curve[0].train_loss
    for pa, pb in zip(a_model.parameters(), b_model.parameters(), strict=True):
        assert torch.equal(pa, pb)

    torch.manual_seed(7)
    run_finetune(_spec(), _model())
    after = torch.rand(1)
    torch.manual_seed(7)
    _model()  # the same draws as above, outside the fine-tune
    assert torch.equal(torch.rand(1), after)


@pytest.mark.parametrize("frozen", [1, 2])
def test_frozen_stages_stay_unchanged(frozen: int) -> None:
    model = _model()
    stages = model.stage_modules()
    before = [{k: v.clone() for k, v in m.state_dict().items()} for s in stages for m in s]
    run_finetune(_spec(frozen_stages=frozen, optimizer="adamw", weight_decay=0.05), model)
    after = [m.state_dict() for s in stages for m in s]
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        same = all(torch.equal(b[k], a[k]) for k in b)  # weights and BatchNorm statistics
        assert same == (i < frozen), f"stage {i}: unchanged={same}, frozen={frozen}"
    assert model.head.weight.requires_grad  # the head is always trained


def test_too_many_frozen_stages_is_an_error() -> None:
    with pytest.raises(ValueError, match="only 3 stages"):
        run_finetune(_spec(frozen_stages=4), _model())


def test_deadline_stops_training_in_time() -> None:
    run_finetune(_spec(), _model())  # warm-up: imports and the data cache are not under test
    seen: list[EpochProgress] = []
    deadline = 1.5
    result = run_finetune(_spec(DIGITS, epochs=200, deadline_seconds=deadline), _model(), progress=seen.append)
    assert result.stopped_by_deadline
    assert result.seconds <= deadline + 0.25, result
    assert result.epochs_completed < 200 and len(seen) == result.epochs_completed
    assert 0 <= result.accuracy <= 100


def test_tiny_deadline_still_returns_an_evaluated_model() -> None:
    run_finetune(_spec(), _model())
    result = run_finetune(_spec(epochs=5, deadline_seconds=0.05), _model())
    assert result.stopped_by_deadline and result.epochs_completed == 0 and result.curve == ()
    assert 0 <= result.accuracy <= 100 and result.seconds < 1.0


def test_should_stop_cancels() -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(FinetuneCancelled):
        run_finetune(_spec(epochs=3), _model(), should_stop=stop)
    assert len(calls) == 4  # polled once per batch


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers_and_other_sources(optimizer: str) -> None:
    lr = 0.1 if optimizer == "sgd" else 0.003
    result = run_finetune(_spec("builtin:shapes?train=160&test=40", lr=lr, optimizer=optimizer), _model())
    assert result.num_classes == 8 and result.epochs_completed == 1


def test_num_threads_is_restored() -> None:
    before = torch.get_num_threads()
    run_finetune(_spec(num_threads=1), _model())
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be an integer >= 1"),
        ("lr", 0.0, "lr must be a finite number > 0"),
        ("lr", float("nan"), "lr must be a finite number"),
        ("optimizer", "rmsprop", "optimizer must be one of sgd, adam, adamw"),
        ("frozen_stages", -1, "frozen_stages must be an integer >= 0"),
        ("deadline_seconds", 0, "deadline_seconds must be a finite number > 0"),
        ("batch_size", 2.5, "batch_size must be an integer"),
        ("num_threads", 0, "num_threads must be an integer >= 1"),
    ],
)
def test_spec_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(**{field: value})


def test_bad_dataset_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match="unknown built-in"):
        run_finetune(_spec("builtin:imagenet"), _model())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_finetune_on_cuda() -> None:
    model = _model()
    result = run_finetune(_spec(DIGITS, epochs=2), model, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert result.accuracy > 60 and result.epochs_completed == 2
