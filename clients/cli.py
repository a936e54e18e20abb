"""``nasoa-submit``: submit fine-tuning tasks to the adaptor, watch them, read the service.

Imports are lazy so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

PROG = "nasoa-submit"
_BUDGET_RE = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(ms|s|sec|m|min|h|hr)?\s*$", re.I)
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


class UsageError(ValueError):
    """A mistake in the command line: printed on one line, exit status 2."""


def parse_budget(text: str) -> float:
    """Seconds from ``30s``, ``2m``, ``1.5h`` or a plain number of seconds.

    >>> parse_budget("30s"), parse_budget("2m"), parse_budget("0.5h"), parse_budget("45")
    (30.0, 120.0, 1800.0, 45.0)
    >>> parse_budget("-5s")
    Traceback (most recent call last):
    ...
    clients.cli.UsageError: budget must be positive, got '-5s'
    """
    match = _BUDGET_RE.match(text)
    if not match:
        raise UsageError(f"budget {text!r} is not a duration: use e.g. 30s, 2m or 1h")
    value = float(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None]
    if not value > 0:
        raise UsageError(f"budget must be positive, got {text!r}")
    if value > 30 * 24 * 3600:
        raise UsageError(f"budget {text!r} is longer than 30 days")
    return value


def _client(args: argparse.Namespace) -> Any:
    from clients._client import AdaptorClient

    return AdaptorClient(args.address, timeout=args.timeout)


def _task_from_args(args: argparse.Namespace) -> Any:
    from adaptor_service._types import TaskSpec
    from nasoa_data import compute_meta_features, resolve

    budget = parse_budget(args.budget)
    ref = resolve(args.dataset)  # raises DatasetError for a bad URI or a missing path
    meta = compute_meta_features(ref).as_dict()
    return TaskSpec(dataset_uri=args.dataset, budget_seconds=budget, meta_features=meta, device_class=args.device)


def _plan_lines(plan: Any) -> list[str]:
    p = plan.prediction
    lines = [
        f"plan ({plan.policy}): {plan.candidate.describe()}",
        f"  predicted accuracy {p.accuracy:.1f}% (+/- {p.accuracy_std:.1f}), "
        f"time {p.seconds:.1f}s (+/- {p.seconds_std:.1f}), margin x{plan.time_margin:.2f}"
        + ("" if plan.feasible else "  [nothing predicted to fit: fastest candidate]"),
    ]
    return lines


def _job_dict(job: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    from adaptor_service import _convert as convert

    return json_format.MessageToDict(convert.job_to_pb(job), preserving_proto_field_name=True)


def cmd_submit(args: argparse.Namespace) -> int:
    task = _task_from_args(args)
    with _client(args) as client:
        job = client.submit(task, job_id=args.job_id or "", models=args.model or [])
        if args.json and not args.wait:
            print(json.dumps(_job_dict(job), indent=2))
            return 0
        print(f"job {job.job_id} {job.state.value}: {args.dataset}, budget {task.budget_seconds:.0f}s")
        for line in _plan_lines(job.plan):
            print(line)
        if not args.wait:
            return 0
        return _watch(client, job.job_id, args)


def _watch(client: Any, job_id: str, args: argparse.Namespace) -> int:
    for event in client.watch_job(job_id, timeout=args.watch_timeout):
        if event.kind == "progress":
            print(f"  epoch {event.epoch}: accuracy {event.accuracy:.1f}% at {event.seconds:.1f}s", flush=True)
        elif event.kind == "state":
            print(f"  [{event.state.value}] {event.message}", flush=True)
    job = client.get_job(job_id)
    if args.json:
        print(json.dumps(_job_dict(job), indent=2))
    elif job.result is not None:
        r = job.result
        print(
            f"result: {job.state.value} accuracy {r.accuracy:.1f}% in {r.seconds:.1f}s "
            f"(budget {job.task.budget_seconds:.0f}s, predicted {job.plan.prediction.accuracy:.1f}% "
            f"in {job.plan.prediction.seconds:.1f}s) {r.message}"
        )
    else:
        print(f"result: {job.state.value} {job.message}")
    return 0 if job.state.value == "DONE" else 1


def cmd_plan(args: argparse.Namespace) -> int:
    task = _task_from_args(args)
    with _client(args) as client:
        plan = client.recommend(task, models=args.model or [], top_k=args.top_k)
    if args.json:
        from google.protobuf import json_format

        from adaptor_service import _convert as convert

        print(json.dumps(json_format.MessageToDict(convert.plan_to_pb(plan), preserving_proto_field_name=True), indent=2))
        return 0
    for line in _plan_lines(plan):
        print(line)
    for alt in plan.alternatives:
        print(f"  - {alt.candidate.describe()}: {alt.prediction.accuracy:.1f}% in {alt.prediction.seconds:.1f}s, {alt.reason}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _watch(client, args.job_id, args)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = [client.get_job(args.job_id)] if args.job_id else client.list_jobs(limit=args.limit)
    if args.json:
        print(json.dumps([_job_dict(j) for j in jobs], indent=2))
        return 0
    for job in jobs:
        result = f"{job.result.accuracy:.1f}% in {job.result.seconds:.1f}s" if job.result else "-"
        print(f"{job.job_id}  {job.state.value:9s}  {job.task.dataset_uri}  {job.plan.candidate.describe()}  {result}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_job(args.job_id)
    print(f"job {job.job_id} {job.state.value}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    with _client(args) as client:
        stats = client.get_stats()
    data = json_format.MessageToDict(stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for key, value in data.items():
        print(f"{key}: {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from clients._client import make_channel
    from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc

    with make_channel(args.zoo_address, token=os.environ.get("NASOA_TOKEN", "")) as channel:
        try:
            reply = zoo_pb2_grpc.ZooServiceStub(channel).ListModels(
                zoo_pb2.ListModelsRequest(pattern=args.pattern), timeout=args.timeout
            )
        except Exception as exc:
            from clients._client import map_rpc_error

            raise map_rpc_error(exc) from None  # type: ignore[arg-type]
    if args.json:
        from google.protobuf import json_format

        print(json.dumps([json_format.MessageToDict(m, preserving_proto_field_name=True) for m in reply.models], indent=2))
        return 0
    for m in reply.models:
        steps = ", ".join(f"{d} {ms:.1f}ms" for d, ms in sorted(m.step_time_ms.items()))
        print(f"{m.name:24s} {m.num_params / 1e6:6.2f}M params  {m.macs / 1e6:8.1f}M MACs  step {steps}  source acc {m.source_accuracy:.1f}%")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """A table of finished jobs: predicted vs actual accuracy and time."""
    with _client(args) as client:
        jobs = [j for j in client.list_jobs(limit=args.limit) if j.result is not None]
    jobs.sort(key=lambda j: j.created_at)
    print(f"{'dataset':28s} {'budget':>7s} {'model':16s} {'pred acc':>8s} {'acc':>6s} {'pred s':>7s} {'sec':>6s}")
    for j in jobs:
        p, r = j.plan.prediction, j.result
        print(f"{j.task.dataset_uri[:28]:28s} {j.task.budget_seconds:7.0f} {j.plan.candidate.model[:16]:16s} "
              f"{p.accuracy:8.1f} {r.accuracy:6.1f} {p.seconds:7.1f} {r.seconds:6.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Submit fine-tuning tasks to the NASOA adaptor and follow them.",
        epilog="Example: nasoa-submit submit builtin:digits --budget 30s --wait",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=os.environ.get("NASOA_ADAPTOR_ADDRESS", "127.0.0.1:50051"),
                        help="adaptor service address (NASOA_ADAPTOR_ADDRESS; default %(default)s)")
    common.add_argument("--timeout", type=float, default=30.0, help="deadline of each call in seconds")
    subparsers = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        # Every command takes the connection options, wherever the user puts them.
        return subparsers.add_parser(name, parents=[common], help=help)

    def task_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("dataset", help="builtin:digits, builtin:fashion-mnist, builtin:shapes, or an ImageFolder path")
        p.add_argument("--budget", required=True, help="time budget, e.g. 30s, 2m, 1h")
        p.add_argument("--model", action="append", help="restrict to this zoo model (repeatable)")
        p.add_argument("--device", default="cpu", help="device class of the workers (cpu, cuda)")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = command("submit", "plan and run a fine-tuning task")
    task_args(p)
    p.add_argument("--wait", action="store_true", help="follow the job and print its result")
    p.add_argument("--job-id", help="idempotency key: submitting it again returns the same job")
    p.add_argument("--watch-timeout", type=float, default=3600.0)
    p.set_defaults(func=cmd_submit)

    p = command("plan", "show the plan for a task without running it")
    task_args(p)
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_plan)

    p = command("watch", "follow a job until it finishes")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch-timeout", type=float, default=3600.0)
    p.set_defaults(func=cmd_watch)

    p = command("status", "one job, or the latest jobs")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = command("cancel", "cancel a queued or running job")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_cancel)

    p = command("models", "list the zoo's models")
    p.add_argument("pattern", nargs="?", default="")
    p.add_argument("--zoo-address", default=os.environ.get("NASOA_ZOO_ADDRESS", "127.0.0.1:50052"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = command("stats", "the adaptor's counts and prediction errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = command("report", "predicted vs actual of finished jobs")
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(func=cmd_report)
    return parser


def _glue_negative_values(argv: Sequence[str]) -> list[str]:
    """``--budget -5s`` -> ``--budget=-5s``, so argparse reports the value, not a missing one."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--budget" and i + 1 < len(args) and args[i + 1].startswith("-"):
            out.append(f"--budget={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_negative_values(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Everything a user can cause gets one line naming the problem.
        known = (UsageError, ValueError, LookupError, PermissionError, ConnectionError, TimeoutError, RuntimeError)
        if not isinstance(exc, known):
            raise
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
