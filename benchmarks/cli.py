"""``nasoa-bench``: the project's benchmarks. Each prints its figures (``--json`` for JSON).

- ``replay``: the QuickTune-extended replay of real fine-tuning meta-data (policies, regret);
- ``live``: a stream of real fine-tuning requests through the running service, per policy;
- ``service``: Recommend latency and Observe throughput, through gRPC and direct;
- ``zoo``: training step time of the zoo against torchvision baselines at equal accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from clients.demo import EXPERIENCE


def cmd_service(args: argparse.Namespace) -> int:
    from benchmarks._service_bench import format_service_result, run_service_benchmark

    log = (lambda _m: None) if args.json else print
    result = run_service_benchmark(calls=args.calls, observations=args.observations, warm=args.warm, progress=log)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_service_result(result))
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from benchmarks._live import format_live, live_json, run_live_benchmark

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - {"nasoa", "fixed", "random"})
    if unknown:
        raise ValueError(f"unknown policies {unknown}: choose among nasoa, fixed, random")
    log = (lambda _m: None) if args.json else print
    results = run_live_benchmark(args.requests, policies, args.home, progress=log, experience=args.experience or None)
    print(live_json(results) if args.json else "\n" + format_live(results))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from benchmarks._replay import run_replay
    from clients.cli import parse_budget

    if args.suite:
        return _replay_suite(args)
    budgets = [parse_budget(b) for b in args.budgets.split(",") if b.strip()]
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasoa-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("service", help="Recommend latency and Observe throughput")
    p.add_argument("--calls", type=int, default=1000, help="Recommend calls per path")
    p.add_argument("--observations", type=int, default=5000, help="Observe results per path")
    p.add_argument("--warm", type=int, default=200, help="observations learned before timing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_service)

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
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--policies", default="nasoa,fixed,random")
    p.add_argument("--home", default="var/bench-live")
    p.add_argument("--experience", default=str(EXPERIENCE),
                   help="experience table every policy's adaptor starts from ('' for a cold start)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_live)

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
