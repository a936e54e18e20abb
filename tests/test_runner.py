"""The worker's side of an adaptor outage: patient calls, and a reporter that never blocks training."""

from __future__ import annotations

import threading
import time

import pytest

from adaptor_service import Adaptor
from adaptor_service.server import make_server
from clients import AdaptorClient
from clients.local_cluster import free_port
from nasoa_contracts import CurvePoint
from worker._runner import AdaptorUnreachable, _Reporter, patiently


def test_patient_calls_wait_for_the_adaptor_to_come_back(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    job = adaptor.submit(digits_task, job_id="wait-for-me")
    port = free_port()
    server, _, _ = make_server(adaptor, f"127.0.0.1:{port}")
    starter = threading.Timer(2.0, server.start)  # the adaptor is down for the first two seconds
    starter.start()
    try:
        with AdaptorClient(f"127.0.0.1:{port}", timeout=2, retries=0) as client:
            began = time.monotonic()
            found = patiently(lambda: client.get_job(job.job_id), "reading the job", seconds=60)
            assert found.job_id == job.job_id and time.monotonic() - began >= 1.5
    finally:
        starter.join()
        server.stop(0).wait()


def test_patient_calls_give_up_as_unreachable_after_their_window():
    with AdaptorClient(f"127.0.0.1:{free_port()}", timeout=0.5, retries=0) as client:
        began = time.monotonic()
        with pytest.raises(AdaptorUnreachable, match="the adaptor did not answer while reading the job"):
            patiently(lambda: client.get_job("any"), "reading the job", seconds=2)
        assert 2 <= time.monotonic() - began < 15


def test_the_reporter_never_makes_training_wait_for_an_unreachable_adaptor():
    with AdaptorClient(f"127.0.0.1:{free_port()}", timeout=2, retries=3) as client:
        reporter = _Reporter(client, "job-1", poll_seconds=0.1)
        began = time.perf_counter()
        for epoch in range(1, 6):
            reporter.progress(CurvePoint(epoch, 50.0, float(epoch)))
            for _ in range(1000):  # the check made before every training batch
                assert not reporter.cancelled.is_set()
        assert time.perf_counter() - began < 0.1
        reporter.stop(timeout=1)


def test_the_reporter_sends_progress_and_sees_a_cancellation(served, digits_task):
    adaptor, address = served
    job = adaptor.submit(digits_task, job_id="to-cancel")
    with AdaptorClient(address, timeout=5) as client:
        reporter = _Reporter(client, job.job_id, poll_seconds=0.1)
        reporter.progress(CurvePoint(1, 40.0, 2.0))
        deadline = time.monotonic() + 5
        while "progress" not in [e.kind for e in adaptor.store.events_after(job.job_id, 0)]:
            assert time.monotonic() < deadline, "the progress point never arrived"
            time.sleep(0.05)
        adaptor.cancel_job(job.job_id)
        assert reporter.cancelled.wait(5)
        reporter.stop()
