"""The CUDA path, checked on a GPU machine: fine-tune every default-zoo model on CUDA
through the worker's real code (checkpoint verified, stages frozen, deadline, evaluation)
and compare with the CPU on the same job.

    python scripts/gpu_check.py [--zoo-dir DIR] [--epochs 3]

Prints one row per model; exits non-zero if CUDA is missing or a run fails.
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    import torch

    from worker import FinetuneSpec, run_finetune
    from zoo_store import DEFAULT_ZOO_DIR, ZooStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-dir", default=str(DEFAULT_ZOO_DIR))
    parser.add_argument("--dataset", default="builtin:shapes?train=2000&test=500")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    store = ZooStore(args.zoo_dir)
    print(f"{'model':10s} {'device':6s} {'epochs':>6s} {'acc %':>6s} {'seconds':>8s} {'deadline':>8s}")
    for name in store.list_models():
        for device in ("cuda", "cpu"):
            model = store.create_model(name)  # sha256-verified safetensors
            spec = FinetuneSpec(args.dataset, epochs=args.epochs, lr=0.01, batch_size=64, frozen_stages=1,
                                optimizer="sgd", deadline_seconds=120.0, num_threads=4)
            began = time.monotonic()
            result = run_finetune(spec, model, device=device)
            assert result.epochs_completed == args.epochs and len(result.curve) == args.epochs
            print(f"{name:10s} {device:6s} {result.epochs_completed:6d} {result.accuracy:6.1f} "
                  f"{time.monotonic() - began:8.2f} {str(result.stopped_by_deadline):>8s}", flush=True)
    deadline = FinetuneSpec(args.dataset, epochs=50, lr=0.01, deadline_seconds=3.0)
    result = run_finetune(deadline, store.create_model(store.list_models()[-1]), device="cuda")
    print(f"deadline 3 s on cuda: stopped={result.stopped_by_deadline} after {result.seconds:.2f}s")
    return 0 if result.stopped_by_deadline and result.seconds <= 3.5 else 1


if __name__ == "__main__":
    sys.exit(main())
