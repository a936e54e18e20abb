"""CPU per Recommend and Submit in process, and the plans themselves, as ``nasoa-adaptor`` serves them.

The adaptor is built from its settings (default zoo served on loopback, default candidate
space and policy, inline learning, no dispatch) and warm-started from the shipped experience
table. The load benchmark's 32 tasks are recommended once, then each is recommended and
submitted in turn, three rounds; CPU time (``time.process_time``) per call is reported.

Usage:
    OMP_NUM_THREADS=1 python -m benchmarks._plan_cost            # CPU figures (JSON)
    OMP_NUM_THREADS=1 python -m benchmarks._plan_cost --plans F  # write 256 plans to F
    OMP_NUM_THREADS=1 python -m benchmarks._plan_cost --profile  # cProfile of the Recommends
    OMP_NUM_THREADS=1 python -m benchmarks._plan_cost --refits   # CPU of the 32 tasks planned
        # again: with the same trees, then after the batch models refit

Two checkouts' ``--plans`` files compare with ``cmp``: a change that must keep every plan
writes the same file.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from adaptor_service.server import SHIPPED_EXPERIENCE, adaptor_from_settings, warm_start_from_file
from benchmarks._load_bench import _tasks
from nasoa_contracts import AdaptorSettings
from zoo_store import DEFAULT_ZOO_DIR, make_zoo_server

BUDGETS = (5, 20, 45, 90, 150, 300, 600, 1800)


def _cpu_ms(call) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    call()
    return (time.process_time() - start) * 1000


def _after_refits(adaptor, tasks) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """CPU ms (sum and p50 over the tasks) of one Recommend per task planned again: first with
    the same trees (a budget one second longer: a new plan, the trees' predictions kept), then
    after both batch models refit on the same data (``Learner.refit``: new trees)."""
    figures = {}
    for label, change in (("same_trees", lambda: None), ("after_refit", adaptor.learner.refit)):
        change()
        ms = [_cpu_ms(lambda t=t: adaptor.recommend(replace(t, budget_seconds=t.budget_seconds + 1))) for t in tasks]
        figures[f"{label}_sum_ms"] = round(sum(ms), 1)
        figures[f"{label}_p50_ms"] = round(statistics.median(ms), 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=Path, help="write the plans of the 32 tasks x 8 budgets to this file")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one Recommend per task")
    parser.add_argument("--refits", action="store_true",
                        help="CPU of the 32 tasks planned again: same trees, then after a refit")
    args = parser.parse_args()
    zoo, port = make_zoo_server(DEFAULT_ZOO_DIR, "127.0.0.1:0")
    zoo.start()
    try:
        with tempfile.TemporaryDirectory(prefix="nasoa-plan-cost-") as home:
            settings = AdaptorSettings(home=Path(home), zoo_address=f"127.0.0.1:{port}", dispatch="none",
                                       learn="inline")
            adaptor = adaptor_from_settings(settings)
            warm_start_from_file(adaptor, str(SHIPPED_EXPERIENCE))
            gc.freeze()  # as nasoa-adaptor does once started
            tasks = _tasks()
            for task in tasks:  # the space's blocks and the tasks' feature rows
                adaptor.recommend(task)
            if args.plans:
                plans = [adaptor.recommend(replace(t, budget_seconds=float(b))) for t in tasks for b in BUDGETS]
                args.plans.write_text("\n".join(map(repr, plans)) + "\n")
                print(f"{len(plans)} plans written to {args.plans}")
            elif args.refits:
                print(json.dumps(_after_refits(adaptor, tasks)))
            elif args.profile:
                profile = cProfile.Profile()
                profile.enable()
                for task in tasks:
                    adaptor.recommend(task)
                profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
            else:
                recommend, submit = [], []
                for _ in range(3):
                    for task in tasks:
                        recommend.append(_cpu_ms(lambda t=task: adaptor.recommend(t)))
                        submit.append(_cpu_ms(lambda t=task: adaptor.submit(t)))
                print(json.dumps({"calls": len(recommend), "recommend_cpu_p50_ms": round(statistics.median(recommend), 1),
                                  "submit_cpu_p50_ms": round(statistics.median(submit), 1)}))
            adaptor.close()
    finally:
        zoo.stop(0)


if __name__ == "__main__":
    main()
