"""The generic experience table: past fine-tuning runs, one row per (run, epoch).

A table is read from CSV or JSONL (see ``docs/EXPERIENCE_FORMAT.md``) into
:class:`ExperienceTable`, a tuple of :class:`ExperienceRun` objects. Past this boundary
nothing is a loose dict: a run carries its task, meta-features, model, hyperparameters and
its learning curve as :class:`~nasoa_contracts.CurvePoint` objects.

Columns
-------
``task_id``, ``run_id``, ``model``, ``epoch``, ``accuracy`` (validation %), ``seconds``
(cumulative), then any number of ``meta.NAME`` (numbers) and ``hp.NAME`` (number or text).

>>> run = ExperienceRun("t", "r1", "m", {"num_samples": 10.0}, {"lr": 0.1},
...                     (CurvePoint(1, 50.0, 10.0), CurvePoint(2, 70.0, 20.0)))
>>> run.outcome_within(15.0)
(50.0, 10.0)
>>> run.outcome_within(5.0)
(0.0, 5.0)
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from nasoa_contracts import Candidate, CurvePoint, HParamValue, Observation, TaskSpec

__all__ = [
    "CURVE_SAMPLE_EPOCHS",
    "ExperienceFormatError",
    "ExperienceRow",
    "ExperienceRun",
    "ExperienceTable",
    "parse_hparam",
    "read_csv",
    "sample_curve",
    "read_jsonl",
    "read_table",
    "runs_to_observations",
    "write_csv",
    "write_jsonl",
]

#: Epochs at which a curve is sampled for a warm start (as in docs/FINDINGS.md).
CURVE_SAMPLE_EPOCHS: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 18, 25, 35, 50)

BASE_COLUMNS: tuple[str, ...] = ("task_id", "run_id", "model", "epoch", "accuracy", "seconds")
META_PREFIX = "meta."
HP_PREFIX = "hp."


class ExperienceFormatError(ValueError):
    """A malformed experience file. The message names the file, the row and the column."""

    def __init__(self, source: str, row: int, column: str, problem: str) -> None:
        self.source = source
        self.row = row
        self.column = column
        self.problem = problem
        super().__init__(f"{source}: row {row}, column {column!r}: {problem}")


@dataclass(frozen=True)
class ExperienceRow:
    """One row of the table: the state of one run after ``epoch`` epochs."""

    task_id: str
    run_id: str
    model: str
    epoch: int
    accuracy: float
    seconds: float
    meta: Mapping[str, float] = field(default_factory=dict)
    hparams: Mapping[str, HParamValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperienceRun:
    """One past fine-tuning run: its task, its configuration and its learning curve.

    ``curve`` is sorted by epoch; accuracy is the validation accuracy (percent) after that
    epoch and ``seconds`` the cumulative time. A run without a curve has one point.
    """

    task_id: str
    run_id: str
    model: str
    meta: Mapping[str, float]
    hparams: Mapping[str, HParamValue]
    curve: tuple[CurvePoint, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(sorted(self.meta.items()))))
        object.__setattr__(self, "hparams", MappingProxyType(dict(sorted(self.hparams.items()))))
        object.__setattr__(self, "curve", tuple(self.curve))
        if not self.curve:
            raise ValueError(f"run {self.run_id!r} of task {self.task_id!r} has no curve point")

    def __reduce__(self) -> tuple[object, ...]:
        # mapping proxies do not pickle: rebuild from plain dicts
        return (ExperienceRun, (self.task_id, self.run_id, self.model, dict(self.meta),
                                dict(self.hparams), self.curve))

    def __deepcopy__(self, memo: dict[int, object]) -> ExperienceRun:
        return self  # immutable

    @property
    def epochs(self) -> int:
        return self.curve[-1].epoch

    @property
    def total_seconds(self) -> float:
        return self.curve[-1].seconds

    @property
    def config_key(self) -> str:
        """Identity of the configuration (model and hyperparameters), outcome excluded."""
        return json.dumps([self.model, dict(self.hparams)], sort_keys=True)

    def curve_within(self, budget_seconds: float) -> tuple[CurvePoint, ...]:
        """The curve points reached within the budget (cumulative seconds <= budget)."""
        return tuple(p for p in self.curve if p.seconds <= budget_seconds)

    def outcome_within(self, budget_seconds: float) -> tuple[float, float]:
        """Best validation accuracy reached within the budget, and the seconds used.

        The run stops after its last epoch that fits; a run whose first epoch does not fit
        scores 0 and uses the whole budget (it was started and killed at the limit).
        """
        points = self.curve_within(budget_seconds)
        if not points:
            return 0.0, float(budget_seconds)
        return max(p.accuracy for p in points), points[-1].seconds

    def to_candidate(self, epochs: int | None = None) -> Candidate:
        return Candidate(self.model, dict(self.hparams), epochs=epochs or self.epochs)

    def to_task(self, budget_seconds: float | None = None) -> TaskSpec:
        budget = budget_seconds if budget_seconds is not None else max(self.total_seconds, 1.0)
        return TaskSpec(
            dataset_uri=f"experience:{self.task_id}",
            budget_seconds=budget,
            meta_features=dict(self.meta),
            task_id=self.task_id,
        )


@dataclass(frozen=True)
class ExperienceTable:
    """A set of runs, grouped by task. ``name`` is where it came from (file or loader)."""

    runs: tuple[ExperienceRun, ...]
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))

    @property
    def task_ids(self) -> tuple[str, ...]:
        """Task ids in order of first appearance."""
        return tuple(dict.fromkeys(run.task_id for run in self.runs))

    def by_task(self) -> dict[str, tuple[ExperienceRun, ...]]:
        groups: dict[str, list[ExperienceRun]] = {}
        for run in self.runs:
            groups.setdefault(run.task_id, []).append(run)
        return {task: tuple(runs) for task, runs in groups.items()}

    def subset(self, task_ids: Iterable[str]) -> ExperienceTable:
        keep = set(task_ids)
        return ExperienceTable(tuple(r for r in self.runs if r.task_id in keep), self.name)

    def rows(self) -> Iterator[ExperienceRow]:
        for run in self.runs:
            for point in run.curve:
                yield ExperienceRow(
                    run.task_id, run.run_id, run.model, point.epoch, point.accuracy,
                    point.seconds, run.meta, run.hparams,
                )

    def __len__(self) -> int:
        return len(self.runs)


# ----------------------------------------------------------------------------- parsing


def parse_hparam(text: str) -> HParamValue:
    """A CSV cell as int, float or text, whichever reads back exactly."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


class _RowParser:
    """Checks one raw row (a mapping of column name to value) and builds an ExperienceRow."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, row: int, column: str, problem: str) -> ExperienceFormatError:
        return ExperienceFormatError(self.source, row, column, problem)

    def text(self, raw: Mapping[str, object], row: int, column: str) -> str:
        value = raw.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise self.error(row, column, "missing value")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.error(row, column, f"expected text, got {value!r}")
        return str(value).strip()

    def number(self, raw: Mapping[str, object], row: int, column: str, what: str) -> float:
        value = raw.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise self.error(row, column, f"expected {what}, got nothing")
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise self.error(row, column, f"expected {what}, got {value!r}") from None
        if not math.isfinite(number):
            raise self.error(row, column, f"expected {what}, got {value!r}")
        return number

    def parse(self, raw: Mapping[str, object], row: int) -> ExperienceRow:
        for column in raw:
            if column not in BASE_COLUMNS and not column.startswith((META_PREFIX, HP_PREFIX)):
                raise self.error(
                    row, column, "unknown column (expected one of "
                    f"{', '.join(BASE_COLUMNS)} or a meta.* / hp.* column)",
                )
        epoch_f = self.number(raw, row, "epoch", "a positive integer")
        if epoch_f < 1 or int(epoch_f) != epoch_f:
            raise self.error(row, "epoch", f"expected a positive integer, got {raw['epoch']!r}")
        accuracy = self.number(raw, row, "accuracy", "a percentage in [0, 100]")
        if not 0.0 <= accuracy <= 100.0:
            raise self.error(
                row, "accuracy", f"expected a percentage in [0, 100], got {raw['accuracy']!r}"
            )
        seconds = self.number(raw, row, "seconds", "a number of seconds >= 0")
        if seconds < 0:
            raise self.error(row, "seconds", f"expected a number of seconds >= 0, got {raw['seconds']!r}")
        meta: dict[str, float] = {}
        hparams: dict[str, HParamValue] = {}
        for column, value in raw.items():
            if column.startswith(META_PREFIX):
                name = column[len(META_PREFIX):]
                if not name:
                    raise self.error(row, column, "empty meta-feature name")
                meta[name] = self.number(raw, row, column, "a number")
            elif column.startswith(HP_PREFIX):
                name = column[len(HP_PREFIX):]
                if not name:
                    raise self.error(row, column, "empty hyperparameter name")
                if value is None or value == "":
                    continue  # not set for this run
                if isinstance(value, str):
                    hparams[name] = parse_hparam(value.strip())
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    if not math.isfinite(value):
                        raise self.error(row, column, f"expected a finite number or text, got {value!r}")
                    hparams[name] = value
                elif isinstance(value, bool):
                    hparams[name] = int(value)
                else:
                    raise self.error(row, column, f"expected a number or text, got {value!r}")
        return ExperienceRow(
            task_id=self.text(raw, row, "task_id"),
            run_id=self.text(raw, row, "run_id"),
            model=self.text(raw, row, "model"),
            epoch=int(epoch_f),
            accuracy=accuracy,
            seconds=seconds,
            meta=meta,
            hparams=hparams,
        )


def _assemble(rows: Iterable[tuple[int, ExperienceRow]], parser: _RowParser, name: str) -> ExperienceTable:
    """Group rows into runs and check that each run and task is consistent."""
    runs: dict[tuple[str, str], list[tuple[int, ExperienceRow]]] = {}
    task_meta: dict[str, tuple[int, Mapping[str, float]]] = {}
    for number, row in rows:
        seen = task_meta.setdefault(row.task_id, (number, row.meta))
        if dict(seen[1]) != dict(row.meta):
            differing = sorted(set(seen[1].items()) ^ set(row.meta.items()))
            column = META_PREFIX + differing[0][0] if differing else "meta.*"
            raise parser.error(
                number, column,
                f"meta-features of task {row.task_id!r} differ from its row {seen[0]}",
            )
        runs.setdefault((row.task_id, row.run_id), []).append((number, row))
    result = []
    for (task_id, run_id), members in runs.items():
        first_number, first = members[0]
        members.sort(key=lambda item: item[1].epoch)
        previous: ExperienceRow | None = None
        for number, row in members:
            if row.model != first.model:
                raise parser.error(number, "model", f"run {run_id!r} changes model (row {first_number} says {first.model!r})")
            if dict(row.hparams) != dict(first.hparams):
                differing = sorted(set(map(str, row.hparams.items())) ^ set(map(str, first.hparams.items())))
                raise parser.error(number, "hp.*", f"hyperparameters of run {run_id!r} differ from its row {first_number}: {differing[:2]}")
            if previous is not None:
                if row.epoch == previous.epoch:
                    raise parser.error(number, "epoch", f"run {run_id!r} has epoch {row.epoch} twice")
                if row.seconds < previous.seconds:
                    raise parser.error(
                        number, "seconds",
                        f"cumulative seconds must not decrease along run {run_id!r} "
                        f"({row.seconds} after {previous.seconds} at epoch {previous.epoch})",
                    )
            previous = row
        result.append(
            ExperienceRun(
                task_id, run_id, first.model, first.meta, first.hparams,
                tuple(CurvePoint(r.epoch, r.accuracy, r.seconds) for _, r in members),
            )
        )
    return ExperienceTable(tuple(result), name)


def read_csv(path: str | Path) -> ExperienceTable:
    """Read a CSV experience table. Row numbers in errors count data rows from 1."""
    path = Path(path)
    parser = _RowParser(path.name)
    with path.open(newline="", encoding="utf-8") as handle:
        return _read_csv_handle(handle, parser, str(path))


def _read_csv_handle(handle: io.TextIOBase, parser: _RowParser, name: str) -> ExperienceTable:
    reader = csv.DictReader(handle)  # type: ignore[arg-type]
    header = reader.fieldnames or []
    for column in BASE_COLUMNS:
        if column not in header:
            raise parser.error(0, column, "missing from the header")

    def rows() -> Iterator[tuple[int, ExperienceRow]]:
        for number, raw in enumerate(reader, start=1):
            if None in raw:
                raise parser.error(number, header[-1], "more cells than header columns")
            yield number, parser.parse(raw, number)

    return _assemble(rows(), parser, name)


def read_jsonl(path: str | Path) -> ExperienceTable:
    """Read a JSONL experience table: one JSON object per line, keys are the column names."""
    path = Path(path)
    parser = _RowParser(path.name)

    def rows() -> Iterator[tuple[int, ExperienceRow]]:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise parser.error(number, "*", f"not valid JSON ({exc.msg})") from None
                if not isinstance(raw, dict):
                    raise parser.error(number, "*", f"expected a JSON object, got {type(raw).__name__}")
                for column in BASE_COLUMNS:
                    if column not in raw:
                        raise parser.error(number, column, "missing value")
                yield number, parser.parse(raw, number)

    return _assemble(rows(), parser, str(path))


def read_table(path: str | Path) -> ExperienceTable:
    """Read a table by extension: ``.csv`` or ``.jsonl`` (also ``.ndjson``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path)
    raise ValueError(f"{path}: unknown experience table format {suffix!r}; use .csv or .jsonl")


def _columns(table: ExperienceTable) -> list[str]:
    meta = sorted({k for run in table.runs for k in run.meta})
    hps = sorted({k for run in table.runs for k in run.hparams})
    return [*BASE_COLUMNS, *(META_PREFIX + m for m in meta), *(HP_PREFIX + h for h in hps)]


def _flat(row: ExperienceRow) -> dict[str, object]:
    out: dict[str, object] = {
        "task_id": row.task_id, "run_id": row.run_id, "model": row.model, "epoch": row.epoch,
        "accuracy": row.accuracy, "seconds": row.seconds,
    }
    out.update({META_PREFIX + k: v for k, v in row.meta.items()})
    out.update({HP_PREFIX + k: v for k, v in row.hparams.items()})
    return out


def write_csv(table: ExperienceTable, path: str | Path) -> None:
    columns = _columns(table)
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in table.rows():
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in _flat(row).items()})


def write_jsonl(table: ExperienceTable, path: str | Path) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for row in table.rows():
            handle.write(json.dumps(_flat(row), sort_keys=False) + "\n")


# ----------------------------------------------------------------------- observations


def sample_curve(
    curve: Sequence[CurvePoint], epochs: Sequence[int] | None = CURVE_SAMPLE_EPOCHS,
    *, best_so_far: bool = True,
) -> tuple[CurvePoint, ...]:
    """The curve at the given epochs (and its last point), optionally as best-so-far accuracy.

    ``best_so_far`` turns each accuracy into the best reached up to that epoch: the
    accuracy of the best checkpoint a job keeps, which is what a budgeted run delivers.
    """
    out = []
    best = -math.inf
    wanted = set(epochs) if epochs is not None else None
    for i, point in enumerate(curve):
        best = max(best, point.accuracy)
        if wanted is None or point.epoch in wanted or i == len(curve) - 1:
            acc = best if best_so_far else point.accuracy
            out.append(CurvePoint(point.epoch, acc, point.seconds))
    return tuple(out)


def runs_to_observations(
    runs: Iterable[ExperienceRun],
    *, epochs: Sequence[int] | None = CURVE_SAMPLE_EPOCHS, best_so_far: bool = True,
) -> list[Observation]:
    """One :class:`Observation` per run, for an adaptor's warm start.

    The curve is sampled at ``epochs`` (None keeps every epoch) plus the run's last epoch;
    the observation's accuracy and seconds are those of its last point. The task's budget
    is the run's total time (a past job's budget is not recorded in the table).
    """
    out = []
    for run in runs:
        curve = sample_curve(run.curve, epochs, best_so_far=best_so_far)
        out.append(
            Observation(
                job_id=f"{run.task_id}/{run.run_id}",
                task=run.to_task(),
                candidate=run.to_candidate(),
                accuracy=curve[-1].accuracy,
                seconds=curve[-1].seconds,
                curve=curve,
            )
        )
    return out
