"""The experience table: readers, writers, errors, the Quick-Tune loader, observations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptor_service._experience import (
    ExperienceFormatError,
    ExperienceRun,
    ExperienceTable,
    read_csv,
    read_jsonl,
    read_table,
    runs_to_observations,
    write_csv,
    write_jsonl,
)
from benchmarks._quicktune import load_quicktune
from nasoa_contracts import CurvePoint

HEADER = "task_id,run_id,model,epoch,accuracy,seconds,meta.num_samples,hp.lr,hp.opt\n"


def _table() -> ExperienceTable:
    meta = {"num_samples": 100.0, "num_classes": 5.0}
    return ExperienceTable(
        (
            ExperienceRun("t1", "r1", "resnet", meta, {"lr": 0.01, "opt": "sgd", "bs": 32},
                          (CurvePoint(1, 40.0, 10.0), CurvePoint(2, 55.5, 21.0), CurvePoint(3, 50.0, 30.5))),
            ExperienceRun("t1", "r2", "vit", meta, {"lr": 1e-4, "opt": "adam", "bs": 16},
                          (CurvePoint(5, 70.0, 99.0),)),  # a run without a curve: one row
            ExperienceRun("t2", "r1", "resnet", {"num_samples": 7.0, "num_classes": 2.0}, {"lr": 0.1},
                          (CurvePoint(1, 12.5, 1.0),)),
        ),
        name="toy",
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    table = _table()
    path = tmp_path / f"exp{suffix}"
    (write_csv if suffix == ".csv" else write_jsonl)(table, path)
    back = read_table(path)
    assert [(r.task_id, r.run_id) for r in back.runs] == [(r.task_id, r.run_id) for r in table.runs]
    for a, b in zip(back.runs, table.runs, strict=True):
        assert a.model == b.model
        assert dict(a.meta) == dict(b.meta)
        assert dict(a.hparams) == dict(b.hparams)
        assert a.curve == b.curve
    assert back.task_ids == ("t1", "t2")


def test_outcome_within_budget() -> None:
    run = _table().runs[0]
    assert run.outcome_within(25.0) == (55.5, 21.0)  # best so far, not the last epoch
    assert run.outcome_within(1000.0) == (55.5, 30.5)
    assert run.outcome_within(5.0) == (0.0, 5.0)  # not even one epoch fits


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ("t,r,m,x,50,10,100,0.1,sgd", "epoch", "expected a positive integer, got 'x'"),
        ("t,r,m,0,50,10,100,0.1,sgd", "epoch", "expected a positive integer, got '0'"),
        ("t,r,m,1,150,10,100,0.1,sgd", "accuracy", "expected a percentage in [0, 100], got '150'"),
        ("t,r,m,1,50,-3,100,0.1,sgd", "seconds", "got '-3'"),
        ("t,r,m,1,50,10,lots,0.1,sgd", "meta.num_samples", "expected a number, got 'lots'"),
        (",r,m,1,50,10,100,0.1,sgd", "task_id", "missing value"),
    ],
)
def test_malformed_csv_names_row_and_column(tmp_path: Path, row: str, column: str, fragment: str) -> None:
    good = "t,r0,m,1,50,10,100,0.1,sgd\n"
    path = _write(tmp_path, "table.csv", HEADER + good * 2 + row + "\n")
    with pytest.raises(ExperienceFormatError) as info:
        read_csv(path)
    message = str(info.value)
    assert message.startswith(f"table.csv: row 3, column '{column}': ")
    assert fragment in message
    assert (info.value.row, info.value.column) == (3, column)


def test_csv_inconsistent_run_and_missing_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", HEADER + "t,r,m,1,50,10,100,0.1,sgd\nt,r,m,2,60,5,100,0.1,sgd\n")
    with pytest.raises(ExperienceFormatError, match=r"a.csv: row 2, column 'seconds': cumulative"):
        read_csv(path)
    path = _write(tmp_path, "b.csv", HEADER + "t,r,m,1,50,10,100,0.1,sgd\nt,r,m,2,60,15,100,0.2,sgd\n")
    with pytest.raises(ExperienceFormatError, match=r"b.csv: row 2, column 'hp.\*'"):
        read_csv(path)
    path = _write(tmp_path, "c.csv", "task_id,run_id,model,epoch,accuracy\nt,r,m,1,50\n")
    with pytest.raises(ExperienceFormatError, match=r"c.csv: row 0, column 'seconds': missing from the header"):
        read_csv(path)
    path = _write(tmp_path, "d.csv", HEADER + "t,r,m,1,50,10,100,0.1,sgd\nt,q,m,1,50,10,200,0.1,sgd\n")
    with pytest.raises(ExperienceFormatError, match=r"d.csv: row 2, column 'meta.num_samples'"):
        read_csv(path)


def test_malformed_jsonl_names_row_and_column(tmp_path: Path) -> None:
    good = {"task_id": "t", "run_id": "r", "model": "m", "epoch": 1, "accuracy": 50.0, "seconds": 3.0}
    bad = {**good, "run_id": "s", "epoch": "x"}
    path = _write(tmp_path, "log.jsonl", json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ExperienceFormatError, match=r"log.jsonl: row 2, column 'epoch': expected a positive integer, got 'x'"):
        read_jsonl(path)
    path = _write(tmp_path, "log2.jsonl", json.dumps(good) + "\n{not json\n")
    with pytest.raises(ExperienceFormatError, match=r"log2.jsonl: row 2, column '\*': not valid JSON"):
        read_jsonl(path)
    path = _write(tmp_path, "log3.jsonl", json.dumps({**good, "colour": "red"}) + "\n")
    with pytest.raises(ExperienceFormatError, match=r"log3.jsonl: row 1, column 'colour': unknown column"):
        read_jsonl(path)


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use .csv or .jsonl"):
        read_table(tmp_path / "x.parquet")


def test_runs_to_observations_samples_the_curve() -> None:
    meta = {"num_samples": 10.0}
    curve = tuple(CurvePoint(e, float(min(e, 7)), 10.0 * e) for e in range(1, 41))
    run = ExperienceRun("t", "r", "m", meta, {"lr": 0.1}, curve)
    (obs,) = runs_to_observations([run])
    assert [p.epoch for p in obs.curve] == [1, 2, 3, 5, 8, 12, 18, 25, 35, 40]
    assert obs.accuracy == 7.0 and obs.seconds == 400.0
    assert obs.task.meta_features == {"num_samples": 10.0}
    assert obs.candidate.model == "m" and obs.candidate.epochs == 40


@pytest.mark.usefixtures("quicktune_data")
def test_quicktune_loader_counts() -> None:
    table = load_quicktune()
    assert len(table) == 3110
    assert len(table.task_ids) == 26
    sizes = [len(runs) for runs in table.by_task().values()]
    assert min(sizes) == 104 and max(sizes) == 135
    run = table.runs[0]
    assert set(run.meta) == {"num_samples", "num_classes", "resolution", "channels"}
    assert "model" not in run.hparams and isinstance(run.hparams["opt"], str)
    assert all(not k.startswith("cat:") for k in run.hparams)
    assert all(len(r.curve) >= 2 for r in table.runs)
    assert all(b.seconds >= a.seconds for r in table.runs for a, b in zip(r.curve, r.curve[1:], strict=False))
    assert len(load_quicktune(min_epochs=1)) == 4665
