"""``nasoa-bench``: the project's benchmarks. Each prints its figures (``--json`` for JSON).

- ``replay``: the QuickTune-extended replay of real fine-tuning meta-data (policies, regret);
- ``live``: a stream of real fine-tuning requests through the running service, per policy;
- ``service``: Recommend latency and Observe throughput, through gRPC and direct;
- ``zoo``: training step time of the zoo against torchvision baselines at equal accuracy;
- ``artifacts``: model upload/download throughput against a file copy, save+upload share of a job;
- ``first-request``: the first request on a fresh adaptor, cold against warm (the default).
- ``load``: many clients and Observe streams against ``nasoa-adaptor``; latency, errors, exact counts;
- ``worker``: the worker's fine-tuning path against a bare PyTorch loop, and deadlines kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from clients.demo import EXPERIENCE


def cmd_first_request(args: argparse.Namespace) -> int:
    from benchmarks._first_request import format_first_request, run_first_request
    from nasoa import parse_duration

    log = (lambda _m: None) if args.json else print
    rows = run_first_request(args.dataset, parse_duration(args.budget), args.home, progress=log)
    print(json.dumps(rows, indent=2) if args.json else format_first_request(rows))
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from benchmarks._service_bench import format_service_result, run_service_benchmark

    log = (lambda _m: None) if args.json else print
    result = run_service_benchmark(calls=args.calls, observations=args.observations, warm=args.warm, progress=log)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_service_result(result))
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from benchmarks._live import LIVE_POLICIES, format_live, live_json, run_live_benchmark
    from nasoa import parse_duration

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(LIVE_POLICIES))
    if unknown:
        raise ValueError(f"unknown policies {unknown}: choose among {', '.join(LIVE_POLICIES)}")
    low, _, high = args.budgets.partition("-")
    budget_range = (parse_duration(low), parse_duration(high or low))
    log = (lambda _m: None) if args.json else print
    results = run_live_benchmark(args.requests, policies, args.home, progress=log, experience=args.experience or None,
                                 budget_range=budget_range)
    print(live_json(results) if args.json else "\n" + format_live(results))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from benchmarks._replay import run_replay
    from nasoa import parse_duration

    if args.suite:
        return _replay_suite(args)
    budgets = [parse_duration(b) for b in args.budgets.split(",") if b.strip()]
    if not budgets:
        raise ValueError("--budgets needs at least one budget, e.g. 0.5h,1h")
    log = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    result = run_replay(
        args.table, budgets, orders=args.orders or 3, seed=args.seed, folds=args.folds,
        cold_start=not args.no_cold_start, png_path=args.png, progress=log,
    )  # fmt: skip
    print(result.to_json() if args.json else result.format_table())
    if args.png and not args.json:
        print(f"\nregret along the stream: {args.png}")
    return 0


def _replay_suite(args: argparse.Namespace) -> int:
    from benchmarks._suite import _json_row, format_suite, run_suite

    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    log = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    rows = run_suite(variants, orders=args.orders or 1, seed=args.seed, folds=args.folds, out_dir=args.out,
                     progress=log)
    if args.json:
        print("\n".join(json.dumps(_json_row(r)) for r in rows))
    else:
        print(format_suite(rows))
        if args.out:
            print(f"\nper-variant tables, suite.jsonl and suite.png in {args.out}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from benchmarks._zoo_bench import run_zoo_benchmark

    log = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    result = run_zoo_benchmark(args.run, rounds=args.rounds, retrain=args.retrain, progress=log)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'baseline':20s} {'acc %':>6s} {'step ms':>8s}  {'zoo model':12s} {'acc %':>6s} {'step ms':>8s} {'ratio':>6s}")
    for row in result["rows"]:
        zoo = row.get("zoo_model") or "-"
        print(f"{row['baseline']:20s} {row['baseline_accuracy']:6.1f} {row['baseline_step_ms']:8.1f}  "
              f"{zoo:12s} {row.get('zoo_accuracy') or float('nan'):6.1f} {row.get('zoo_step_ms') or float('nan'):8.1f} "
              f"{row.get('ratio') or float('nan'):5.1f}x")
    print(f"every baseline >= {result.get('goal_ratio', 2.0)}x: {result['all_meet_goal']}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from benchmarks._collect import DEFAULT_DATASETS, collect_experience

    datasets = args.dataset or list(DEFAULT_DATASETS)
    table = collect_experience(args.out, datasets, args.runs, args.max_prior_seconds, args.seed)
    print(f"{len(table.runs)} runs written to {args.out}")
    return 0


def cmd_artifacts(args: argparse.Namespace) -> int:
    from benchmarks._artifact_bench import format_artifact_result, run_artifact_benchmark

    log = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    models = [m for m in (args.models or "").split(",") if m] or None
    result = run_artifact_benchmark(args.size_mb, args.repeats, args.epochs, models, not args.no_jobs, progress=log)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_artifact_result(result))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from benchmarks._load_bench import format_load, run_load_benchmark

    log = (lambda _m: None) if args.json else print
    result = run_load_benchmark(clients=args.clients, streams=args.streams, seconds=args.seconds, progress=log,
                                experience=args.experience or None, timeline=args.timeline)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_load(result))
    return 0 if result.errors == 0 and result.counts_match else 1


def cmd_restart(args: argparse.Namespace) -> int:
    from benchmarks._load_bench import run_restart_benchmark

    result = run_restart_benchmark(observations=args.observations, progress=(lambda _m: None) if args.json else print)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from benchmarks._worker_bench import format_worker, run_worker_benchmark

    log = (lambda _m: None) if args.json else print
    result = run_worker_benchmark(jobs=args.jobs, epochs=args.epochs, progress=log)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_worker(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasoa-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("service", help="Recommend latency and Observe throughput")
    p.add_argument("--calls", type=int, default=1000, help="Recommend calls per path")
    p.add_argument("--observations", type=int, default=5000, help="Observe results per path")
    p.add_argument("--warm", type=int, default=200, help="observations learned before timing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_service)

    p = sub.add_parser("load", help="N clients and M Observe streams against nasoa-adaptor for a fixed time")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--experience", default=str(EXPERIENCE),
                   help="experience table the adaptor warm-starts from ('' for none; default: the shipped one)")
    p.add_argument("--timeline", type=Path, help="write every Recommend and Submit to this CSV (start s, call, ms)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("restart", help="nasoa-adaptor's start to SERVING over many learned results")
    p.add_argument("--observations", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_restart)

    p = sub.add_parser("worker", help="the worker's fine-tuning path against a bare PyTorch loop; deadlines kept")
    p.add_argument("--jobs", type=int, default=30, help="deadline-bound runs checked against budget x 1.05")
    p.add_argument("--epochs", type=int, default=3, help="epochs of each throughput run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("replay", help="replay real fine-tuning meta-data (QuickTune-extended by default)")
    p.add_argument("--table", default="quicktune-extended",
                   help="experience table (.csv/.jsonl), a QuickTune folder, or quicktune-extended")
    p.add_argument("--budgets", default="0.5h,1h,4h,16h")
    p.add_argument("--orders", type=int, default=None,
                   help="shuffled orders of the request stream (default 3; 1 with --suite)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--no-cold-start", action="store_true", help="skip the cold-start stream")
    p.add_argument("--png", default="replay_regret.png", help="where to draw regret along the stream")
    p.add_argument("--suite", action="store_true",
                   help="the generalisation suite: one replay per variant (QuickTune transformed, collected, synthetic)")
    p.add_argument("--variants", default="", help="with --suite: a comma-separated subset of the variants")
    p.add_argument("--out", default="", help="with --suite: folder for per-variant tables, suite.jsonl, suite.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("zoo", help="zoo vs torchvision baselines: step time at equal proxy accuracy")
    p.add_argument("--run", default=None, help="NAS run directory (default: the committed search run)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--retrain", action="store_true", help="proxy-train every model again in this process")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("collect", help="fine-tune random candidates for real; write an experience table")
    p.add_argument("--out", required=True, help="experience table to write (.jsonl or .csv)")
    p.add_argument("--dataset", action="append", help="dataset URI (repeatable; default: three built-in subsets)")
    p.add_argument("--runs", type=int, default=16, help="runs per dataset")
    p.add_argument("--max-prior-seconds", type=float, default=20.0, help="skip candidates estimated slower")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("live", help="real fine-tuning stream through the service, per policy")
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--policies", default="nasoa,nasoa-one-shot,fixed,asha",
                   help="comma-separated: nasoa (the default generator), nasoa-one-shot, fixed, asha, random")
    p.add_argument("--budgets", default="10s-2m", metavar="LOW-HIGH",
                   help="budget range of the requests, six budgets spaced on a log scale (default %(default)s)")
    p.add_argument("--home", default="var/bench-live")
    p.add_argument("--experience", default=str(EXPERIENCE),
                   help="experience table every policy's adaptor starts from ('' for a cold start)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_live)

    p = sub.add_parser("artifacts", help="model upload/download throughput vs a file copy; save+upload share of a job")
    p.add_argument("--size-mb", type=float, default=64.0, help="size of the transferred safetensors file")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2, help="epochs of each job's fine-tune")
    p.add_argument("--models", help="comma-separated zoo models (default: the whole default zoo)")
    p.add_argument("--no-jobs", action="store_true", help="throughput only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_artifacts)

    p = sub.add_parser("first-request", help="the first request on a fresh adaptor: cold vs warm (the default)")
    p.add_argument("--dataset", default="builtin:digits")
    p.add_argument("--budget", default="30s", help="e.g. 30s, 2m")
    p.add_argument("--home", default="var/bench-first-request")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_first_request)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, LookupError, OSError) as exc:
        print(f"nasoa-bench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
