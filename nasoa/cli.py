"""``nasoa-submit``: submit fine-tuning tasks to the adaptor, follow them, read the service.

Built on typer and rich. Every command takes ``--json`` (plain values, ISO 8601 times) and
``--address``. Exit status: 0 done, 1 another error (authentication, timeout, refused
operation), 2 usage (bad input, checked here and by the service), 3 the job failed or was
cancelled, 4 a service is unreachable (no adaptor at the address, or no worker for the queue
after the grace period). Heavy imports happen inside the commands, so ``--help`` is quick.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from nasoa import DEVICE_CLASSES
from nasoa._cli_text import (
    children_table,
    job_json,
    job_table,
    make_console,
    print_json,
    print_plan,
    result_text,
    staged_result_lines,
    worker_seconds_text,
)
from nasoa._follow import Follower, NoWorker, warn_without_workers

PROG = "nasoa-submit"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_JOB_FAILED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_CODES_HELP = (
    "Exit status: 0 done, 1 other error, 2 usage (bad input), 3 job failed or cancelled, "
    "4 service unreachable (adaptor, or no worker for the queue)."
)

app = typer.Typer(
    name=PROG,
    help="Submit fine-tuning tasks to the NASOA adaptor, follow them, and read the service.\n\n"
    "Example: nasoa-submit submit builtin:digits --budget 30s --wait",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# The device classes workers serve, one queue each: --device offers exactly these.
Device = enum.StrEnum("Device", {name: name for name in DEVICE_CLASSES})  # type: ignore[misc]


Address = Annotated[str, typer.Option(
    "--address", envvar="NASOA_ADAPTOR_ADDRESS", help="adaptor service", metavar="HOST:PORT",
)]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, metavar="SECONDS", help="deadline of each call")]
Json = Annotated[bool, typer.Option("--json", help="print JSON (plain values, ISO times)")]
Dataset = Annotated[str, typer.Argument(
    metavar="DATASET",
    help="builtin:digits, builtin:fashion-mnist, builtin:shapes (with ?train=N&test=N&seed=S), "
    "or an ImageFolder path (made absolute; inside NASOA_DATA_ROOT when set)",
)]
Budget = Annotated[str, typer.Option("--budget", "-b", metavar="DURATION", help="time budget, e.g. 30s, 2m, 1h30m")]
Models = Annotated[list[str] | None, typer.Option("--model", "-m", metavar="NAME", help="only this zoo model (repeatable)")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="device class of the workers to run on")]
ZooAddress = Annotated[str, typer.Option(
    "--zoo-address", envvar="NASOA_ZOO_ADDRESS", metavar="HOST:PORT", help="zoo service (and artifact store)",
)]
DEFAULT_ZOO_ADDRESS = "127.0.0.1:50052"
WatchTimeout = Annotated[float, typer.Option("--watch-timeout", metavar="SECONDS", help="give up following after this many seconds")]
DEFAULT_ADDRESS = "127.0.0.1:50051"


def _client(address: str, timeout: float) -> Any:
    from nasoa import Client

    return Client(address, timeout=timeout)


# --------------------------------------------------------------------------- following a job


def _follow(client: Any, job: Any, as_json: bool, watch_timeout: float, grace: float | None) -> int:
    job = Follower(client, job, make_console(stderr=True), show=not as_json, grace=grace).run(watch_timeout)
    if as_json:
        print_json(job_json(job, client.children(job) if job.child_job_ids else ()))
    else:
        make_console().print(result_text(job), markup=False)
        if job.child_job_ids:
            for line in staged_result_lines(job, client.children(job)):
                make_console().print(line, markup=False)
        if job.result is not None and job.result.artifact_id:
            make_console().print(f"model: artifact {job.result.artifact_id} in the artifact store; get it with\n"
                             f"  nasoa-submit download {job.job_id} -o ./{job.job_id}     or: nasoa-submit predict {job.job_id} IMAGES...",
                             markup=False)
    return EXIT_OK if job.state.value == "DONE" else EXIT_JOB_FAILED


# --------------------------------------------------------------------------- commands


@app.command()
def submit(
    dataset: Dataset,
    budget: Budget,
    model: Models = None,
    device: DeviceOpt = Device.cpu,  # type: ignore[attr-defined]
    job_id: Annotated[str, typer.Option(help="idempotency key: submitting it again returns the same job")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="follow the job live and exit with its outcome")] = False,
    worker_grace: Annotated[float, typer.Option(
        help="with --wait: fail (exit 4) when the job is still queued this many seconds and no worker "
        "consumes its queue (0: never)")] = 60.0,
    watch_timeout: WatchTimeout = 3600.0,
    as_json: Json = False,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 30.0,
) -> int:
    """Plan a fine-tuning task and queue it; --wait follows it to its result."""
    with _client(address, timeout) as client:
        job = client.submit(dataset, budget, models=model or (), device=device.value, job_id=job_id)
        console = make_console(stderr=True)
        if not as_json:
            make_console().print(f"job {job.job_id} {job.state.value}: {job.task.dataset_uri}, "
                             f"budget {job.task.budget_seconds:g}s", markup=False)
            print_plan(make_console(), job.plan, job.task.budget_seconds)
        if job.state.value == "QUEUED" or job.plan.staged:  # a staged job's runs wait in the queue
            warn_without_workers(device.value, console)
        if not wait:
            if as_json:
                from nasoa import job_record

                print_json(job_record(job))
            return EXIT_OK
        return _follow(client, job, as_json, watch_timeout, grace=worker_grace or None)


@app.command()
def plan(
    dataset: Dataset,
    budget: Budget,
    model: Models = None,
    device: DeviceOpt = Device.cpu,  # type: ignore[attr-defined]
    top_k: Annotated[int, typer.Option(min=0, max=1000, help="runners-up to show")] = 5,
    as_json: Json = False,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 30.0,
) -> int:
    """Show the plan for a task (a staged plan: a table per stage) and why each runner-up lost; nothing runs."""
    from nasoa import parse_duration

    with _client(address, timeout) as client:
        result = client.plan(dataset, budget, models=model or (), device=device.value, top_k=top_k)
    if as_json:
        from nasoa import plan_record

        print_json({**plan_record(result), "budget_seconds": parse_duration(budget)})
        return EXIT_OK
    console = make_console()
    print_plan(console, result, parse_duration(budget))
    for alt in result.alternatives:
        p = alt.prediction
        console.print(f"  - {alt.candidate.describe()}: {p.accuracy:.1f}% in {p.seconds:.1f}s; {alt.reason}",
                      markup=False)
    return EXIT_OK


@app.command()
def watch(
    job_id: Annotated[str, typer.Argument(help="the job to follow")],
    as_json: Json = False,
    watch_timeout: WatchTimeout = 3600.0,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 30.0,
) -> int:
    """Follow a job live until it finishes; exit 0 when DONE, 3 when it failed."""
    with _client(address, timeout) as client:
        return _follow(client, client.job(job_id), as_json, watch_timeout, grace=None)


@app.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="one job; the latest jobs when omitted")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="jobs to list")] = 20,
    as_json: Json = False,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 30.0,
) -> int:
    """One job (a staged job with its child jobs), or a table of the latest jobs."""
    from nasoa import job_record

    with _client(address, timeout) as client:
        jobs = [client.job(job_id)] if job_id else client.jobs(limit=limit)
        children = client.children(jobs[0]) if job_id and jobs[0].child_job_ids else []
        if as_json:
            print_json(job_json(jobs[0], children) if job_id else [job_record(j) for j in jobs])
            return EXIT_OK
    if job_id:
        job = jobs[0]
        console = make_console()
        console.print(f"job {job.job_id} {job.state.value}: {job.task.dataset_uri}, budget "
                      f"{job.task.budget_seconds:g}s, {job.task.device_class}", markup=False)
        if job.parent_job_id:
            console.print(f"child of job {job.parent_job_id}, stage {job.stage + 1}"
                          + (f", trains to epoch {job.stop_after_epochs}" if job.stop_after_epochs else "")
                          + (f", continues job {job.resume_from_job_id}" if job.resume_from_job_id else ""),
                          markup=False)
        print_plan(console, job.plan, job.task.budget_seconds)
        if children:
            console.print(children_table(job, children))
            console.print(worker_seconds_text(job, children), markup=False)
        if job.state.value == "FAILED":
            console.print(f"error: {job.message}", markup=False)
        elif job.message:
            console.print(f"message: {job.message}", markup=False)
        if job.result is not None:
            console.print(result_text(job), markup=False)
            for point in job.result.curve:
                console.print(f"  epoch {point.epoch}: {point.accuracy:.1f}% at {point.seconds:.1f}s", markup=False)
        return EXIT_OK
    job_table(jobs, "latest jobs")
    return EXIT_OK


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="a QUEUED or RUNNING job")],
    as_json: Json = False,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 30.0,
) -> int:
    """Cancel a queued or running job."""
    with _client(address, timeout) as client:
        job = client.cancel(job_id)
    if as_json:
        from nasoa import job_record

        print_json(job_record(job))
    else:
        make_console().print(f"job {job.job_id} {job.state.value}", markup=False)
    return EXIT_OK


@app.command()
def models(
    pattern: Annotated[str, typer.Argument(help="fnmatch pattern, e.g. 'etnas-*'")] = "",
    zoo_address: ZooAddress = DEFAULT_ZOO_ADDRESS,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> int:
    """List the zoo's models with their sizes and measured step times."""
    from nasoa_contracts import (
        ClientSettings,
        ServiceTimeout,
        ServiceUnavailable,
        list_zoo_models,
        load_settings,
        make_channel,
    )

    with make_channel(zoo_address) as channel:
        try:
            entries = list_zoo_models(channel, pattern, token=load_settings(ClientSettings).token, timeout=timeout)
        except (ServiceUnavailable, ServiceTimeout):
            from nasoa import ServiceUnreachable

            raise ServiceUnreachable(
                f"no zoo service answers at {zoo_address}: start one with `nasoa-zoo serve`, or point "
                "--zoo-address / NASOA_ZOO_ADDRESS at a running one"
            ) from None
    rows = [{"name": m.name, "family": m.family, "num_params": int(m.num_params), "macs": int(m.macs),
             "step_time_ms": dict(sorted(m.step_time_ms.items())), "step_batch_size": int(m.step_batch_size),
             "source_accuracy": m.source_accuracy, "num_stages": int(m.num_stages)} for m in entries]
    if as_json:
        print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"zoo at {zoo_address}", title_justify="left")
    for name in ("model", "params", "MACs", "step time", "source acc"):
        table.add_column(name, justify="left" if name in ("model", "step time") else "right")
    for r in rows:
        steps = ", ".join(f"{d} {ms:.1f} ms" for d, ms in r["step_time_ms"].items())
        table.add_row(r["name"], f"{r['num_params'] / 1e6:.2f}M", f"{r['macs'] / 1e6:.1f}M", steps,
                      f"{r['source_accuracy']:.1f}%")
    make_console().print(table)
    return EXIT_OK


@app.command()
def download(
    job_id: Annotated[str, typer.Argument(help="a finished job")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder to write into (default ./JOB_ID)")]
    = None,
    as_json: Json = False,
    address: Address = DEFAULT_ADDRESS,
    zoo_address: ZooAddress = DEFAULT_ZOO_ADDRESS,
    timeout: Timeout = 60.0,
) -> int:
    """Download a finished job's fine-tuned model (sha256-verified)."""
    from clients import download_job

    folder = _reachable(lambda: download_job(job_id, output, adaptor_address=address, zoo_address=zoo_address,
                                             progress=not as_json, timeout=timeout), address, zoo_address)
    manifest = json.loads((folder / "manifest.json").read_text())
    if as_json:
        print_json({"job_id": job_id, "folder": str(folder.resolve()), "model": manifest["base_model"]["name"],
                     "dataset": manifest["dataset"]["uri"], "test_accuracy": manifest["test_accuracy"],
                     "classes": manifest["classes"]})
    else:
        make_console().print(f"job {job_id}: {manifest['base_model']['name']} fine-tuned on {manifest['dataset']['uri']}, "
                         f"test accuracy {manifest['test_accuracy']:.1f}% -> {folder}/ "
                         "(model.safetensors, manifest.json, SHA256SUMS)", markup=False)
    return EXIT_OK


@app.command()
def predict(
    job_id: Annotated[str, typer.Argument(help="a job id, or the folder of a downloaded model")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE_OR_FOLDER...", help="images, or folders of them")],
    as_json: Json = False,
    address: Address = DEFAULT_ADDRESS,
    zoo_address: ZooAddress = DEFAULT_ZOO_ADDRESS,
) -> int:
    """Classify images with a job's fine-tuned model (downloaded into $NASOA_HOME/models once)."""
    from clients import expand_images, load_finetuned

    model = _reachable(lambda: load_finetuned(job_id, adaptor_address=address, zoo_address=zoo_address),
                       address, zoo_address)
    files = expand_images(images)
    predictions = model.predict(files)
    if as_json:
        print_json([{"image": str(f), "class": c, "probability": p} for f, (c, p) in zip(files, predictions, strict=True)])
        return EXIT_OK
    for image, (label, probability) in zip(files, predictions, strict=True):
        sys.stdout.write(f"{image}\t{label}\t{probability:.4f}\n")  # tab-separated, for cut and awk
    return EXIT_OK


def _reachable(call: Any, address: str, zoo_address: str) -> Any:
    """``call()``; a connection failure names the service that does not answer and how to start it."""
    from nasoa import Client, ServiceUnreachable

    try:
        return call()
    except (ConnectionError, TimeoutError) as exc:
        with Client(address) as client:
            if not client.reachable():
                raise ServiceUnreachable(client.unreachable_message()) from exc
        raise ServiceUnreachable(
            f"no artifact store answers at {zoo_address} ({exc}): it is served by `nasoa-zoo serve`; point "
            "--zoo-address / NASOA_ZOO_ADDRESS at a running one"
        ) from exc


@app.command()
def stats(as_json: Json = False, address: Address = DEFAULT_ADDRESS, timeout: Timeout = 30.0) -> int:
    """The adaptor's counts and prediction errors."""
    with _client(address, timeout) as client:
        data = client.stats()
    if as_json:
        print_json(data)
        return EXIT_OK
    console = make_console()
    by_state = ", ".join(f"{k} {v}" for k, v in data["jobs_by_state"].items()) or "none"
    console.print(f"policy {data['policy']}, {data['candidates']} candidates, time margin x{data['time_margin']:.2f}\n"
                  f"jobs {data['jobs']} ({by_state})\n"
                  f"observations learned {data['observations']}\n"
                  f"accuracy MAE {data['accuracy_mae']:.1f} points, time error {100 * data['time_relative_error']:.0f}%",
                  markup=False)
    return EXIT_OK


@app.command()
def report(
    html: Annotated[Path | None, typer.Option("--html", help="write one self-contained HTML page here")] = None,
    with_models: Annotated[bool, typer.Option(
        "--with-models", help="with --html: download each finished job's model next to the page "
        "(PAGE-models/JOB_ID/) and link the leaderboard to it")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="latest jobs to include")] = 200,
    as_json: Json = False,
    address: Address = DEFAULT_ADDRESS,
    zoo_address: ZooAddress = DEFAULT_ZOO_ADDRESS,
    timeout: Timeout = 30.0,
) -> int:
    """Finished jobs: predicted against actual, state and error; --html for plots."""
    from nasoa import leaderboard_rows, write_report

    with _client(address, timeout) as client:
        jobs = client.jobs(limit=limit)
        data = client.stats() if html else None
    finished = sorted((j for j in jobs if j.result is not None), key=lambda j: j.created_at)
    if html is not None:
        links = _model_links(finished, html, with_models, address, zoo_address)
        path = write_report(jobs, html, stats=data, artifact_link=lambda job: links.get(job.job_id))
        if as_json:
            print_json({"html": str(path.resolve()), "jobs": len(finished)})
        else:
            make_console().print(f"report of {len(finished)} finished jobs written to {path.resolve()}", markup=False)
        return EXIT_OK
    if as_json:
        print_json(leaderboard_rows(finished))
        return EXIT_OK
    job_table(finished, f"{len(finished)} finished jobs, oldest first")
    return EXIT_OK


def _model_links(jobs: Sequence[Any], page: Path, download: bool, address: str, zoo_address: str) -> dict[str, str]:
    """Job id -> the manifest of its model's folder, relative to the page: downloaded next to
    the page with ``download``, else a copy already in ``$NASOA_HOME/models``."""
    from clients import download_job
    from nasoa_contracts import ClientSettings, load_settings

    links = {}
    for job in jobs:
        if job.state.value != "DONE" or not job.result.artifact_id:
            continue
        if download:
            target = page.parent / f"{page.stem}-models" / job.job_id
            folder = _reachable(lambda t=target, j=job: download_job(
                j.job_id, t, adaptor_address=address, zoo_address=zoo_address, progress=False), address, zoo_address)
        else:
            folder = load_settings(ClientSettings).home / "models" / job.job_id
        if (folder / "manifest.json").is_file():
            links[job.job_id] = os.path.relpath(folder.resolve() / "manifest.json", page.resolve().parent)
    return links


# --------------------------------------------------------------------------- entry point


def _exit_code(exc: BaseException) -> tuple[int, str] | None:
    """The exit status and one-line message for an error a user can cause; None: a bug."""
    from nasoa import JobFailed, ServiceUnreachable
    from nasoa_contracts import (
        AuthenticationError,
        FailedPrecondition,
        InvalidArgument,
        NotFound,
        ServiceTimeout,
        ServiceUnavailable,
    )

    if isinstance(exc, ServiceUnreachable | NoWorker | ServiceUnavailable):
        return EXIT_UNREACHABLE, str(exc)
    if isinstance(exc, JobFailed):
        return EXIT_JOB_FAILED, str(exc)
    if isinstance(exc, PermissionError):
        return EXIT_ERROR, f"{exc} (set NASOA_TOKEN)" if isinstance(exc, AuthenticationError) else str(exc)
    if isinstance(exc, ServiceTimeout | FailedPrecondition):
        return EXIT_ERROR, str(exc)
    if isinstance(exc, InvalidArgument | NotFound | ValueError | LookupError | OSError):
        return EXIT_USAGE, str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see the module docstring)."""
    from typer.exceptions import TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name=PROG, standalone_mode=False)
    except typer.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except TyperException as exc:  # click's usage errors, as typer re-exports them
        context = getattr(exc, "ctx", None)
        command = f"{PROG} {context.info_name}" if context is not None and context.parent is not None else PROG
        print(f"{PROG}: {' '.join(exc.format_message().split())} (see `{command} --help`)",  # type: ignore[attr-defined]
              file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except Exception as exc:
        known = _exit_code(exc)
        if known is None:
            raise
        message = " ".join(known[1].split())  # one line, whatever the server sent
        print(f"{PROG}: {message}", file=sys.stderr)
        return known[0]
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
