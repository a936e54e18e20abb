"""``nasoa-zoo``: serve, list and build the model zoo.

Heavy imports (torch, grpc) happen inside the subcommands, so ``nasoa-zoo --help`` is fast.
Errors a user can cause print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _settings(args: argparse.Namespace) -> Any:
    from nasoa_contracts import ZooSettings, load_settings

    overrides = {"zoo_dir": args.zoo_dir, "zoo_address": getattr(args, "address", None),
                 "grace_seconds": getattr(args, "grace", None)}
    return load_settings(ZooSettings, **{k: v for k, v in overrides.items() if v is not None})


def _store(args: argparse.Namespace) -> Any:
    from zoo_store._store import DEFAULT_ZOO_DIR, ZooStore

    return ZooStore(_settings(args).zoo_dir or DEFAULT_ZOO_DIR)


def _fmt_entry_row(entry: Any) -> dict[str, Any]:
    return {
        "name": entry.name,
        "family": entry.family,
        "architecture": entry.architecture,
        "encoding": entry.encoding,
        "num_params": entry.num_params,
        "params_m": round(entry.num_params / 1e6, 3),
        "macs": entry.macs,
        "mmacs": round(entry.macs / 1e6, 2),
        "input_size": entry.input_size,
        "step_time_ms": dict(entry.step_time_ms),
        "step_batch_size": entry.step_batch_size,
        "source_accuracy": entry.source_accuracy,
        "sha256": entry.sha256,
        "size_bytes": entry.size_bytes,
        "num_stages": entry.num_stages,
    }


# --------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    entries = _store(args).list_entries(args.pattern)
    if args.json:
        print(json.dumps([_fmt_entry_row(e) for e in entries], indent=2))
        return 0
    header = f"{'name':<16} {'architecture':<36} {'params':>8} {'MACs':>9} {'step ms':>18} {'src acc':>7}  sha256"
    print(header)
    for e in entries:
        steps = ", ".join(f"{v:.1f} {k}" for k, v in sorted(e.step_time_ms.items())) or "-"
        print(
            f"{e.name:<16} {e.architecture:<36} {e.num_params / 1e6:>7.3f}M {e.macs / 1e6:>8.1f}M "
            f"{steps:>18} {e.source_accuracy:>6.2f}%  {e.sha256[:12]}"
        )
    if not entries:
        print(f"(no models match {args.pattern!r})", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    entry = _store(args).get_entry(args.name)
    print(json.dumps(entry.to_dict(), indent=2))
    return 0


def cmd_encodings(args: argparse.Namespace) -> int:
    if not args.official:
        raise CliError("only --official is supported: nasoa-zoo encodings --official [--json]")
    import torch

    from zoo_store._encoding import OFFICIAL_ENCODINGS
    from zoo_store._etnas import ETNAS, count_params_and_macs

    rows = []
    for name, encoding in OFFICIAL_ENCODINGS.items():
        with torch.device("meta"):
            model = ETNAS(encoding, num_classes=1000)
        params, macs = count_params_and_macs(model, (3, 224, 224))
        rows.append(
            {"name": name, "encoding": encoding, "params_m": round(params / 1e6, 2), "gmacs": round(macs / 1e9, 2)}
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<9} {r['encoding']:<66} {r['params_m']:>7.2f}M {r['gmacs']:>6.2f} GMACs")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from zoo_store.offline import (
        DEFAULT_ZOO_SPECS,
        PretrainRecipe,
        PretrainSpec,
        load_nas_specs,
        pretrain_and_register,
    )

    specs: list[Any] = []
    if args.default_zoo:
        specs.extend(DEFAULT_ZOO_SPECS)
    for item in args.encoding or []:
        name, sep, encoding = item.partition("=")
        if not sep or not name or not encoding:
            raise CliError(f"--encoding wants NAME=ENCODING, got {item!r}")
        specs.append(PretrainSpec(name, encoding))
    if args.from_nas:
        specs.extend(load_nas_specs(args.from_nas))
    if args.only:
        wanted = set(args.only)
        specs = [s for s in specs if s.name in wanted]
    if not specs:
        raise CliError("nothing to pretrain: give --default-zoo, --encoding NAME=ENC or --from-nas FILE")
    from zoo_store._encoding import ETNASEncoding

    for spec in specs:  # fail before any training on a bad encoding
        ETNASEncoding.parse(spec.encoding)
    recipe = PretrainRecipe(
        source_uri=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
    )
    devices = [d.strip() for d in args.profile_devices.split(",") if d.strip()]
    pretrain_and_register(_store(args), specs, recipe, overwrite=args.overwrite, profile_devices=devices)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from zoo_store._profile import profile_entries

    torch.set_num_threads(args.threads)
    store = _store(args)
    for name in args.names:
        store.get_entry(name)  # ModelNotFound before measuring anything
    for e in profile_entries(store, args.names or None, device=args.device, steps=args.steps):
        print(
            f"{e.name:<16} "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(e.step_time_ms.items()))
            + f" (batch {e.step_batch_size})"
        )
    return 0


def cmd_import_etnas(args: argparse.Namespace) -> int:
    from zoo_store._importers import import_etnas_pth

    entry = import_etnas_pth(
        args.path,
        _store(args),
        name=args.name,
        input_size=args.input_size,
        source_accuracy=args.source_accuracy,
        overwrite=args.overwrite,
    )
    print(json.dumps(_fmt_entry_row(entry), indent=2))
    return 0


def cmd_import_torchvision(args: argparse.Namespace) -> int:
    from zoo_store._importers import import_torchvision

    entry = import_torchvision(
        args.arch,
        args.weights,
        _store(args),
        name=args.name,
        input_size=args.input_size,
        source_accuracy=args.source_accuracy,
        overwrite=args.overwrite,
    )
    print(json.dumps(_fmt_entry_row(entry), indent=2))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from zoo_store._client import ZooClient

    token = os.environ.get(args.admin_token_env, "")
    if not token:
        raise CliError(f"set ${args.admin_token_env} to the zoo's admin token to register models")
    store = _store(args)
    if args.name:
        entry = store.get_entry(args.name)
        path = store.checkpoint_path(args.name)
    else:
        raise CliError("give --name of a local zoo entry to upload (see nasoa-zoo list)")
    if args.path:
        entry = entry.replace(name=args.as_name or entry.name)
        path = args.path
    elif args.as_name:
        entry = entry.replace(name=args.as_name)
    with ZooClient(args.server, timeout=args.timeout) as client:
        stored = client.register(entry, path, token=token)
    print(json.dumps(_fmt_entry_row(stored), indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from nasoa_contracts import enable_reflection, setup_logging
    from zoo_store._artifacts import ArtifactSettings, ArtifactStore, artifact_token
    from zoo_store._service import make_zoo_server

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    token = settings.zoo_admin_token or None
    store = _store(args)
    address = settings.zoo_address
    artifact_settings = ArtifactSettings.from_env()
    artifacts = ArtifactStore(artifact_settings.resolve_directory(store.root), artifact_settings)
    server, port, health = make_zoo_server(
        store, address=address, admin_token=token, read_token=settings.token, return_health=True, artifacts=artifacts,
        artifact_token=artifact_settings.token or artifact_token(create=True),
        guard_artifact_reads=bool(artifact_settings.token),
    )  # fmt: skip
    if settings.reflection:
        enable_reflection(server, ["nasoa.v1.ZooService", "nasoa.v1.ArtifactService"])
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(
        f"nasoa-zoo serving {len(store.list_models())} models from {store.root} on "
        f"{address.rpartition(':')[0]}:{port} (admin {'enabled' if token else 'disabled'}); "
        f"{len(artifacts.records())} artifacts in {artifacts.root} (uploads need the token"
        f"{', reads too' if artifact_settings.token else ''})",
        flush=True,
    )
    stop.wait()
    health.enter_graceful_shutdown()
    server.stop(settings.grace_seconds).wait()
    print("nasoa-zoo stopped", flush=True)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    try:
        from zoo_store.offline import run_search
    except ImportError as exc:
        raise CliError(f"the NAS module is not available (zoo_store.offline._search: {exc})") from None
    import torch

    torch.set_num_threads(args.threads)
    baselines: bool | list[str] = True
    if args.no_baselines:
        baselines = False
    elif args.baselines:
        baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    extra = {"source_uri": args.data} if args.data else {}
    result = run_search(
        args.run_dir,
        args.trials,
        seed=args.seed,
        proxy_steps=args.proxy_steps,
        batch_size=args.batch_size,
        baselines=baselines,
        population_size=args.population_size,
        device=args.device,
        **extra,
    )
    print(f"{'name':<10} {'encoding':<40} {'params':>8} {'MACs':>8} {'acc %':>6} {'step ms':>8}")
    for r in result.front:
        print(
            f"{r.name:<10} {r.architecture:<40} {r.params / 1e6:>7.3f}M {r.macs / 1e6:>7.1f}M "
            f"{r.accuracy:>6.2f} {r.step_ms:>8.1f}"
        )
    print(
        f"front written to {result.run_dir / 'pareto.json'}; pretrain it with: "
        f"nasoa-zoo pretrain --from-nas {result.run_dir}"
    )
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nasoa-zoo",
        description="The NASOA model zoo: serve checkpoints, list and build zoo models.",
    )
    parser.add_argument(
        "--zoo-dir",
        help="zoo store directory (default: $NASOA_ZOO_DIR, else the committed zoo_store/default_zoo)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from nasoa_contracts import ZooSettings, settings_table

    p = sub.add_parser(
        "serve",
        help="serve the zoo over gRPC (ZooService + health)",
        description="Serve the zoo over gRPC (ZooService + health).",
        epilog="settings (environment variables, or the [zoo] table of the TOML file $NASOA_CONFIG):\n"
        + settings_table(ZooSettings).replace("%", "%%"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", help="HOST:PORT to serve on (overrides NASOA_ZOO_ADDRESS)")
    p.add_argument("--grace", type=float, help="seconds to finish calls on SIGTERM (overrides NASOA_GRACE_SECONDS)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("list", help="list zoo models")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="print one model's entry as JSON")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("encodings", help="the released ET-NAS encodings with params and GMACs at 224")
    p.add_argument("--official", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_encodings)

    p = sub.add_parser("pretrain", help="pretrain architectures on the source data and register them")
    p.add_argument("--default-zoo", action="store_true", help="the hand-picked default zoo encodings")
    p.add_argument("--encoding", action="append", metavar="NAME=ENCODING")
    p.add_argument("--from-nas", metavar="PATH", help="NAS output (front JSON or search directory)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="train only these names")
    p.add_argument("--data", default=None, help="source dataset URI (default: builtin:patterns ...)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--profile-devices",
        default="cpu,cuda",
        help="device classes to measure step time on, when present (default cpu,cuda)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing entries of these names")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("profile", help="measure and store training step times")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median is stored)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("NASOA_TORCH_THREADS", "1")))
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("import-etnas", help="import a released ET-NAS .pth state dict")
    p.add_argument("path", help="<encoding>.pth or ET-NAS/<name>/<encoding>.pth")
    p.add_argument("--name", help="zoo name (default: from the path)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--source-accuracy", type=float, default=None, help="default: the released top-1")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import_etnas)

    p = sub.add_parser("import-torchvision", help="import a torchvision architecture from a local weights file")
    p.add_argument("arch", help="e.g. resnet18, mobilenet_v3_small, regnet_x_400mf, efficientnet_b0")
    p.add_argument("weights", help="local .pth state dict (never downloaded)")
    p.add_argument("--name", help="zoo name (default: tv-<arch>)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--source-accuracy", type=float, default=0.0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import_torchvision)

    p = sub.add_parser("register", help="upload a local zoo entry to a zoo server (admin)")
    p.add_argument("--server", required=True, metavar="HOST:PORT")
    p.add_argument("--name", required=True, help="local entry to upload")
    p.add_argument("path", nargs="?", help="a safetensors file to upload instead of the entry's blob")
    p.add_argument("--as-name", help="register under this name on the server")
    p.add_argument("--admin-token-env", default="NASOA_ZOO_ADMIN_TOKEN")
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("search", help="the offline multi-objective NAS (accuracy vs measured step time)")
    p.add_argument("run_dir", help="run directory (created; an existing one is resumed)")
    p.add_argument("--trials", type=int, default=24, help="evaluated trials the study should hold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxy-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--population-size", type=int, default=12)
    p.add_argument("--data", default=None, help="source dataset URI (default: the proxy recipe's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--baselines", help="comma-separated torchvision baselines (default: all)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--threads", type=int, default=int(os.environ.get("NASOA_TORCH_THREADS", "1")))
    p.set_defaults(func=cmd_search)
    return parser


def _fill_pretrain_defaults(args: argparse.Namespace) -> None:
    if args.command != "pretrain":
        return
    from zoo_store.offline import PretrainRecipe

    default = PretrainRecipe()
    for arg, attr in (
        ("data", "source_uri"),
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("seed", "seed"),
        ("threads", "threads"),
    ):
        if getattr(args, arg) is None:
            setattr(args, arg, getattr(default, attr))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _fill_pretrain_defaults(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("nasoa-zoo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line naming the problem, for every error a user can cause
        if os.environ.get("NASOA_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        code = getattr(exc, "code", None)
        if callable(code):  # grpc.RpcError
            message = f"{code().name}: {exc.details()}"  # type: ignore[attr-defined]
        print(f"nasoa-zoo {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
