"""``nasoa-submit report --html``: the page renders in a real headless Chromium, without errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _chromium import open_page
from test_cli import _finish, nasoa_submit

from nasoa_contracts import TaskSpec

ARTIFACTS = Path(__file__).resolve().parents[1] / "var" / "test-artifacts"

CHECK = """(() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return {
    plots: plots.map(p => p.id),
    traces: plots.map(p => (p.data || []).length),
    svgs: plots.map(p => p.querySelectorAll('.main-svg').length),
    points: document.querySelectorAll('.scatterlayer .point').length,
    bars: document.querySelectorAll('.barlayer .point').length,
    rows: [...document.querySelectorAll('#leaderboard tbody tr')].map(r => r.children[2].textContent),
  };
})()"""


@pytest.fixture
def finished_jobs(served, tmp_path, monkeypatch):
    monkeypatch.setenv("NASOA_HOME", str(tmp_path / "home"))
    adaptor, address = served
    for i, (dataset, budget, accuracy) in enumerate([("builtin:digits", 20, 71.0), ("builtin:shapes", 30, 64.0),
                                                     ("builtin:digits", 40, 88.0), ("builtin:digits", 60, 80.0)]):
        job = adaptor.submit(TaskSpec(dataset, budget, {"num_samples": 1000.0 + i, "num_classes": 10.0}))
        _finish(adaptor, job.job_id, accuracy=accuracy)
    failed = adaptor.submit(TaskSpec("builtin:shapes", 25, {"num_samples": 900.0, "num_classes": 8.0}))
    _finish(adaptor, failed.job_id, status="failed", accuracy=0.0, message="RuntimeError: out of memory")
    adaptor.submit(TaskSpec("builtin:shapes", 25, {"num_samples": 901.0, "num_classes": 8.0}))  # still queued
    return adaptor, address


def test_html_report_renders_in_chromium_without_console_errors(finished_jobs, tmp_path):
    _, address = finished_jobs
    page = tmp_path / "report.html"
    proc = nasoa_submit("report", "--html", str(page), address=address)
    assert proc.returncode == 0, proc.stderr
    assert "report of 5 finished jobs written to" in proc.stdout
    html = page.read_text()
    assert "<script" in html and "cdn.plot.ly" not in html.split("</script>")[-1]  # plotly.js is inline

    result = open_page(page, CHECK, tmp_path / "report.png")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "report.png", ARTIFACTS / "report.png")
    assert result.console_errors == []
    value = result.value
    assert value["plots"] == ["predicted-vs-actual", "stream", "budget-use"]
    assert all(n >= 1 for n in value["svgs"]), value  # each plot drew its SVG
    assert value["traces"] == [4, 4, 1]
    assert value["points"] >= 2 * 5  # a marker per job in both scatter plots
    assert value["bars"] >= 5
    assert value["rows"][:4] == ["DONE"] * 4 and value["rows"][4] == "FAILED"
    png = result.screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_report_without_finished_jobs_is_a_clear_error(served, tmp_path, monkeypatch):
    monkeypatch.setenv("NASOA_HOME", str(tmp_path / "home"))
    _, address = served
    proc = nasoa_submit("report", "--html", str(tmp_path / "r.html"), address=address)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("nasoa-submit: no finished job to report on yet: submit one with "
                                   "`nasoa-submit submit ... --wait`")


def test_regret_is_the_gap_to_the_best_within_the_budget():
    from nasoa import regrets

    class J:  # the fields regrets() reads
        def __init__(self, dataset, budget, accuracy, state="DONE"):
            self.task = TaskSpec(dataset, budget)
            self.result = type("R", (), {"accuracy": accuracy})()
            self.state = type("S", (), {"value": state})()

    jobs = [J("a", 10, 50.0), J("a", 20, 70.0), J("a", 20, 60.0), J("b", 5, 40.0), J("a", 30, 0.0, "FAILED")]
    assert regrets(jobs) == [0.0, 0.0, 10.0, 0.0, 70.0]
