"""Job and observation stores: in memory, SQLite (default) or PostgreSQL, one interface.

The contract (Optuna storage style):
- every method is thread safe;
- ``record_observations`` is the idempotency point: an observation for a job id that is
  already recorded (before, or earlier in the same batch) is not stored again, and its
  position is ``None``; a batch is one transaction where the store has them;
- stored objects are never modified by readers (they get copies).

The SQL store keeps each object as its proto message's binary encoding, base64 text in a
text column: coding it is about a hundred times cheaper than the proto's JSON, which rows
written by earlier versions hold and which is still read.
"""

from __future__ import annotations

import abc
import base64
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_contracts import InvalidArgument, Job, JobEvent, JobState, NotFound, Observation, convert

__all__ = ["JobStore", "MemoryStore", "SQLStore", "open_store"]


class JobStore(abc.ABC):
    """Where jobs, their events and the observations live."""

    @abc.abstractmethod
    def create_job(self, job: Job) -> tuple[Job, bool]:
        """Store a new job; if its id exists, return the stored one and False."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job:
        """The job, or NotFound."""

    @abc.abstractmethod
    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        """Newest first."""

    @abc.abstractmethod
    def update_job(self, job: Job) -> None:
        """Replace the stored job with ``job`` (same id)."""

    @abc.abstractmethod
    def append_event(self, event: JobEvent) -> JobEvent:
        """Store an event, assigning its per-job sequence number."""

    @abc.abstractmethod
    def events_after(self, job_id: str, after_seq: int) -> list[JobEvent]:
        """Events of a job with seq > after_seq, in order."""

    @abc.abstractmethod
    def record_observations(self, observations: Sequence[Observation]) -> list[int | None]:
        """Store observations in order; each one's log position, or None if its job id is known."""

    def record_observation(self, obs: Observation) -> int | None:
        """Store an observation and return its log position, or None if its job id is known."""
        return self.record_observations([obs])[0]

    @abc.abstractmethod
    def observations_after(self, after_seq: int = 0) -> Iterator[tuple[int, Observation]]:
        """The observation log from after_seq on, in order."""

    @abc.abstractmethod
    def count_observations(self) -> int: ...

    @abc.abstractmethod
    def count_jobs_by_state(self) -> dict[str, int]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryStore(JobStore):
    """Everything in dictionaries: for embedding, tests and the replay benchmark."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._events: dict[str, list[JobEvent]] = {}
        self._observations: list[Observation] = []
        self._observed_ids: set[str] = set()

    def create_job(self, job: Job) -> tuple[Job, bool]:
        with self._lock:
            if job.job_id in self._jobs:
                return replace(self._jobs[job.job_id]), False
            self._jobs[job.job_id] = replace(job)
            return replace(job), True

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise NotFound(f"no job with id {job_id!r}")
            return replace(self._jobs[job_id])

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if state is None or j.state == state]
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        return [replace(j) for j in jobs[:limit]]

    def update_job(self, job: Job) -> None:
        with self._lock:
            if job.job_id not in self._jobs:
                raise NotFound(f"no job with id {job.job_id!r}")
            self._jobs[job.job_id] = replace(job)

    def append_event(self, event: JobEvent) -> JobEvent:
        with self._lock:
            events = self._events.setdefault(event.job_id, [])
            stored = replace(event, seq=len(events) + 1)
            events.append(stored)
            return stored

    def events_after(self, job_id: str, after_seq: int) -> list[JobEvent]:
        with self._lock:
            return [e for e in self._events.get(job_id, []) if e.seq > after_seq]

    def record_observations(self, observations: Sequence[Observation]) -> list[int | None]:
        positions: list[int | None] = []
        with self._lock:
            for obs in observations:
                if obs.job_id in self._observed_ids:
                    positions.append(None)
                    continue
                self._observed_ids.add(obs.job_id)
                self._observations.append(obs)
                positions.append(len(self._observations))
        return positions

    def observations_after(self, after_seq: int = 0) -> Iterator[tuple[int, Observation]]:
        with self._lock:
            items = list(enumerate(self._observations, start=1))[after_seq:]
        yield from items

    def count_observations(self) -> int:
        with self._lock:
            return len(self._observations)

    def count_jobs_by_state(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for job in self._jobs.values():
                counts[job.state.value] = counts.get(job.state.value, 0) + 1
            return counts


_metadata = sa.MetaData()
_jobs = sa.Table(
    "nasoa_jobs",
    _metadata,
    sa.Column("job_id", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),
)
_events = sa.Table(
    "nasoa_job_events",
    _metadata,
    sa.Column("job_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
)
_observations = sa.Table(
    "nasoa_observations",
    _metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    # The unique job id is what makes Observe idempotent across restarts and replicas.
    sa.Column("job_id", sa.String(128), nullable=False, unique=True),
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)


class SQLStore(JobStore):
    """A SQLAlchemy store: ``sqlite:///path.db`` (default) or ``postgresql+psycopg://...``.

    Each write is one transaction (a batch of observations: one for the batch); the unique
    constraints (job id, (job id, seq)) settle races between threads or replicas. SQLite must
    be 3.35 or newer (``INSERT ... RETURNING``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, object] = {"future": True}
        if url.startswith("sqlite"):
            # One connection per thread; WAL lets readers (WatchJob) run beside the writer.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self._engine = sa.create_engine(url, **kwargs)
        dialect = self._engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise InvalidArgument(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://...")
        if dialect == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old for the store: it needs 3.35 or newer")
        if dialect == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        _metadata.create_all(self._engine)
        self._event_lock = threading.Lock()
        # A known job id inserts nothing and returns no row: that is the idempotency.
        dialect_insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        self._insert_observation = (
            dialect_insert(_observations)
            .on_conflict_do_nothing(index_elements=[_observations.c.job_id])
            .returning(_observations.c.seq)
        )

    def close(self) -> None:
        self._engine.dispose()

    def create_job(self, job: Job) -> tuple[Job, bool]:
        body = _encode(convert.job_to_pb(job))
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    _jobs.insert().values(
                        job_id=job.job_id, state=job.state.value, created_at=job.created_at, body=body
                    )
                )
            return replace(job), True
        except sa.exc.IntegrityError:
            return self.get_job(job.job_id), False

    def get_job(self, job_id: str) -> Job:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_jobs.c.body).where(_jobs.c.job_id == job_id)).first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return convert.job_from_pb(_decode(row[0], pb.Job))  # type: ignore[arg-type]

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        query = sa.select(_jobs.c.body).order_by(_jobs.c.created_at.desc()).limit(limit)
        if state is not None:
            query = query.where(_jobs.c.state == state.value)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [convert.job_from_pb(_decode(r[0], pb.Job)) for r in rows]  # type: ignore[arg-type]

    def update_job(self, job: Job) -> None:
        body = _encode(convert.job_to_pb(job))
        with self._engine.begin() as conn:
            updated = conn.execute(
                _jobs.update().where(_jobs.c.job_id == job.job_id).values(state=job.state.value, body=body)
            ).rowcount
        if not updated:
            raise NotFound(f"no job with id {job.job_id!r}")

    def append_event(self, event: JobEvent) -> JobEvent:
        for _attempt in range(20):
            with self._event_lock, self._engine.begin() as conn:
                last = conn.execute(
                    sa.select(sa.func.max(_events.c.seq)).where(_events.c.job_id == event.job_id)
                ).scalar()
                stored = replace(event, seq=(last or 0) + 1)
                try:
                    conn.execute(
                        _events.insert().values(
                            job_id=stored.job_id,
                            seq=stored.seq,
                            body=_encode(convert.event_to_pb(stored)),
                        )
                    )
                    return stored
                except sa.exc.IntegrityError:
                    pass  # another replica took this seq: read again
            time.sleep(0.01)
        raise RuntimeError(f"could not append an event to job {event.job_id}")

    def events_after(self, job_id: str, after_seq: int) -> list[JobEvent]:
        query = (
            sa.select(_events.c.body)
            .where(_events.c.job_id == job_id, _events.c.seq > after_seq)
            .order_by(_events.c.seq)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [convert.event_from_pb(_decode(r[0], pb.JobEvent)) for r in rows]  # type: ignore[arg-type]

    def record_observations(self, observations: Sequence[Observation]) -> list[int | None]:
        # One transaction for the batch: with SQLite, each commit rewrites the table's last
        # pages into the write-ahead log, so one commit per result multiplies the I/O.
        rows = [
            {"job_id": obs.job_id, "recorded_at": time.time(), "body": _encode(convert.observation_to_pb(obs))}
            for obs in observations
        ]
        with self._engine.begin() as conn:
            found = [conn.execute(self._insert_observation, row).first() for row in rows]
        return [None if row is None else int(row[0]) for row in found]

    def observations_after(self, after_seq: int = 0) -> Iterator[tuple[int, Observation]]:
        query = (
            sa.select(_observations.c.seq, _observations.c.body)
            .where(_observations.c.seq > after_seq)
            .order_by(_observations.c.seq)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        for seq, body in rows:
            yield int(seq), convert.observation_from_pb(_decode(body, pb.ObserveRequest))  # type: ignore[arg-type]

    def count_observations(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_observations)).scalar() or 0)

    def count_jobs_by_state(self) -> dict[str, int]:
        query = sa.select(_jobs.c.state, sa.func.count()).group_by(_jobs.c.state)
        with self._engine.connect() as conn:
            return {state: int(n) for state, n in conn.execute(query).all()}


def _encode(message: object) -> str:
    return base64.b64encode(message.SerializeToString()).decode("ascii")  # type: ignore[attr-defined]


def _decode(body: str, message_type: type) -> object:
    if body.startswith("{"):  # proto JSON, as earlier versions wrote it (base64 never starts with "{")
        return convert.from_json(body, message_type)
    return message_type.FromString(base64.b64decode(body))


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_store(url: str) -> JobStore:
    """``memory://``, ``sqlite:///PATH`` or ``postgresql://...`` (psycopg 3 is used)."""
    if url in ("memory", "memory://"):
        return MemoryStore()
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if not (url.startswith("sqlite") or url.startswith("postgresql")):
        raise InvalidArgument(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://...")
    return SQLStore(url)
