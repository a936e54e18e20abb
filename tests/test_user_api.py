"""The user's side against real services: zoo, warm adaptor, a Celery worker on RabbitMQ, fine-tuning.

``nasoa-submit submit --wait`` follows a real job to DONE; a job that fails in the worker is
FAILED in the adaptor and a FAILURE in Celery's task events, and runs once; the HTML report
of real jobs renders in Chromium; ``nasoa.fit`` returns the fine-tuned model.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid

import pytest
from _chromium import open_page
from celery import Celery
from kombu import Connection
from test_cli import image_folder, nasoa_submit
from test_report import CHECK

from adaptor_service import SHIPPED_EXPERIENCE
from clients.local_cluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, rabbitmq_url):
    prefix = f"nasoa-test-{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("user-api")
    env = {"NASOA_QUEUE_PREFIX": prefix}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASOA_QUEUE_PREFIX", prefix)
        patch.setenv("NASOA_BROKER_URL", rabbitmq_url)
        patch.setenv("NASOA_HOME", str(home / "client"))
        with LocalCluster(home / "cluster", broker_url=rabbitmq_url, warm_start=SHIPPED_EXPERIENCE, env=env) as c:
            wait_ready(c)
            yield c
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        for device in ("cpu", "cuda"):
            channel.queue_delete(f"{prefix}.{device}")


def wait_ready(cluster: LocalCluster, timeout: float = 120) -> None:
    """Until the worker consumes its queue (Celery logs "ready.")."""
    log = cluster.log_dir / "worker0.log"
    deadline = time.monotonic() + timeout
    while not (log.exists() and log.read_text().count("ready.") > wait_ready.starts.get(log, 0)):
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.5)
    wait_ready.starts[log] = log.read_text().count("ready.")


wait_ready.starts = {}


def test_submit_wait_follows_a_real_job_to_done(cluster):
    address = cluster.adaptor_address
    proc = nasoa_submit("submit", "builtin:digits", "--budget", "20s", "--wait", address=address, timeout=300)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, (cluster.log_dir / "worker0.log").read_text()[-3000:])
    assert "no worker consumes" not in proc.stderr  # the worker was found through Celery's inspect
    assert "result: DONE accuracy" in proc.stdout
    job_id = proc.stdout.split()[1]
    job = json.loads(nasoa_submit("status", job_id, "--json", address=address).stdout)
    assert job["state"] == "DONE" and job["result"]["accuracy"] > 20.0
    assert len(job["result"]["curve"]) >= 1 and job["result"]["seconds"] <= 22.0
    # The adaptor's JSON log has an INFO line per submit, and per start and result of each run.
    lines = [json.loads(line) for line in (cluster.log_dir / "adaptor.log").read_text().splitlines()
             if line.startswith("{")]

    def events(of: str) -> list[str]:
        return [line["event"] for line in lines if line.get("job_id") == of and "event" in line]

    runs = job.get("child_job_ids") or []
    if runs:  # a staged plan (probe-then-commit): the runs are child jobs
        assert "[RUNNING] stage 1 of 2:" in proc.stderr and "winner: stage 2" in proc.stdout
        assert events(job_id) == ["submit"]
        assert all(events(run) == ["start", "result"] for run in runs), {run: events(run) for run in runs}
    else:
        assert "[RUNNING] running on nasoa0." in proc.stderr
        assert events(job_id) == ["submit", "start", "result"]


class CeleryEvents(threading.Thread):
    """Celery's task events as Flower sees them: the last task-succeeded/-failed per task id."""

    def __init__(self, broker_url: str) -> None:
        super().__init__(daemon=True)
        self.app = Celery(broker=broker_url)
        self.seen: dict[str, str] = {}
        self.ready = threading.Event()
        self.receiver = None

    def on_event(self, event: dict) -> None:
        if event["type"] in ("task-failed", "task-succeeded") and event.get("uuid"):
            self.seen[event["uuid"]] = event["type"]

    def run(self) -> None:
        with self.app.connection() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.on_event})
            self.receiver.on_consume_ready = lambda *args, **kwargs: self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.join(10)


def test_failed_job_is_a_celery_failure_and_runs_once(cluster, tmp_path, rabbitmq_url):
    events = CeleryEvents(rabbitmq_url)
    events.start()
    assert events.ready.wait(30)
    address = cluster.adaptor_address
    folder = image_folder(tmp_path / "pets")
    cluster.stop_process("worker0")  # the folder goes away before any worker takes the job
    try:
        proc = nasoa_submit("submit", str(folder), "--budget", "20s", "--json", address=address)
        assert proc.returncode == 0, proc.stderr
        assert "no worker consumes" in proc.stderr
        job_id = json.loads(proc.stdout)["job_id"]
        shutil.rmtree(folder)
    finally:
        cluster.start_worker(0)
    proc = nasoa_submit("watch", job_id, "--watch-timeout", "180", address=address, timeout=300)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "result: FAILED" in proc.stdout
    status = json.loads(nasoa_submit("status", job_id, "--json", address=address).stdout)
    assert status["state"] == "FAILED" and "does not exist" in status["error"]
    tasks = status.get("child_job_ids") or [job_id]  # a staged job's runs are the Celery tasks
    deadline = time.monotonic() + 30
    while not set(tasks) <= set(events.seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    events.stop()
    assert {events.seen.get(task) for task in tasks} == {"task-failed"}  # Flower and `celery events` show FAILURE
    time.sleep(3)  # a redelivered message would have started the job again by now
    with Connection(rabbitmq_url) as conn:
        _, messages, _ = conn.channel().queue_declare(f"{cluster.env['NASOA_QUEUE_PREFIX']}.cpu", passive=True)
    assert messages == 0
    from clients import AdaptorClient

    with AdaptorClient(address) as client:
        for task in tasks:
            starts = [e for e in client.watch_job(task) if e.kind == "state" and "running" in e.message]
            assert len(starts) == 1


def test_report_of_real_jobs_renders_and_leaderboard_is_a_dataframe(cluster, tmp_path):
    import nasoa

    page = tmp_path / "real-report.html"
    proc = nasoa_submit("report", "--html", str(page), address=cluster.adaptor_address)
    assert proc.returncode == 0, proc.stderr
    result = open_page(page, CHECK, tmp_path / "real-report.png")
    assert result.console_errors == []
    assert all(n >= 1 for n in result.value["svgs"]) and "DONE" in result.value["rows"]
    frame = nasoa.leaderboard(address=cluster.adaptor_address)
    assert {"job_id", "state", "accuracy", "predicted_accuracy", "seconds", "budget_used"} <= set(frame.columns)
    assert (frame["state"] == "DONE").any() and frame["accuracy"].iloc[0] == frame["accuracy"].max()


def test_models_lists_the_zoo_as_plain_values(cluster):
    proc = nasoa_submit("models", "etnas-z*", "--json", "--zoo-address", cluster.zoo_address,
                        address=cluster.adaptor_address)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and all(r["name"].startswith("etnas-z") for r in rows)
    assert all(isinstance(r["num_params"], int) and r["step_time_ms"]["cpu"] > 0 for r in rows)
    table = nasoa_submit("models", "--zoo-address", cluster.zoo_address, address=cluster.adaptor_address).stdout
    assert "etnas-z1" in table and "source acc" in table


def _digits_sample(n: int = 40):
    from nasoa_data import load_arrays

    _, _, x_test, y_test, names = load_arrays("builtin:digits")
    return list(x_test[:n]), [names[int(i)] for i in y_test[:n]]


def _check_finetuned(model, tmp_path) -> None:
    assert model.plan["model"] and model.curve and model.accuracy > 50.0
    images, labels = _digits_sample()
    predictions = model.predict(images)
    assert len(predictions) == len(images) and all(0.0 <= p <= 1.0 for _, p in predictions)
    hits = sum(label == predicted for (predicted, _), label in zip(predictions, labels, strict=True))
    assert hits / len(labels) > 0.5  # well above chance (10 classes)
    saved = model.save(tmp_path / "saved")
    assert (saved / "model.safetensors").is_file() and (saved / "manifest.json").is_file()


def test_fit_with_an_address_returns_the_fine_tuned_model(cluster, tmp_path, monkeypatch):
    import nasoa

    monkeypatch.setenv("NASOA_HOME", str(tmp_path / "client"))
    model = nasoa.fit("builtin:digits", "15s", address=cluster.adaptor_address, zoo_address=cluster.zoo_address,
                      progress=False)
    _check_finetuned(model, tmp_path)
    frame = nasoa.leaderboard(address=cluster.adaptor_address)
    assert model.manifest["job_id"] in set(frame["job_id"])
    proc = nasoa_submit("report", "--html", str(tmp_path / "r.html"), "--with-models", "--zoo-address",
                        cluster.zoo_address, address=cluster.adaptor_address)
    assert proc.returncode == 0, proc.stderr
    link = f'href="r-models/{model.manifest["job_id"]}/manifest.json"'
    assert link in (tmp_path / "r.html").read_text()
    assert (tmp_path / "r-models" / model.manifest["job_id"] / "model.safetensors").is_file()


def test_fit_without_an_address_starts_a_warm_single_machine_cluster(tmp_path, monkeypatch):
    """No address: this process starts zoo, adaptor (warm, SQLite) and a worker on the embedded broker."""
    import nasoa
    from nasoa import _fit

    monkeypatch.delenv("NASOA_BROKER_URL", raising=False)
    monkeypatch.setenv("NASOA_HOME", str(tmp_path / "home"))
    try:
        model = nasoa.fit("builtin:digits", "15s", progress=False)
        _check_finetuned(model, tmp_path)
        cluster = nasoa.local_cluster()
        assert cluster.env["NASOA_BROKER_URL"] == "" and cluster.env["NASOA_STORE_URL"].startswith("sqlite:///")
        client = nasoa.Client(cluster.adaptor_address)
        board = nasoa.leaderboard()
        submitted = board[board["parent_job_id"].isna()]  # a staged job's runs have their own rows
        assert len(submitted) == 1
        job = client.job(submitted["job_id"].iloc[0])
        assert model.manifest["job_id"] in (job.job_id, *job.child_job_ids)  # the winning run's model
        # The shipped table, then one observation per run of this job that ran (a probe still
        # queued when its stage was decided is cancelled and records none).
        ran = [child for child in client.children(job) if child.state.value != "CANCELLED"]
        assert client.stats()["observations"] == 48 + (len(ran) if job.child_job_ids else 1)
    finally:
        _fit._stop_cluster()
