"""Resolving a dataset URI into a validated :class:`DatasetRef` (no image decoded)."""

from __future__ import annotations

import os
import re
import urllib.parse

from ._folders import scan_folder
from ._refs import (
    _BUILTINS,
    _SCHEME,
    BUILTIN_NAMES,
    DatasetError,
    DatasetRef,
    _fashion_dir,
    _fashion_files,
    inside,
    validation_count,
)

__all__ = ["resolve"]


def resolve(uri: str, data_root: str | os.PathLike[str] | None = None) -> DatasetRef:
    """Validate a dataset URI cheaply (no image is decoded) and return its :class:`DatasetRef`.

    ``data_root`` defaults to ``$NASOA_DATA_ROOT``; see the module docstring.

    >>> ref = resolve("builtin:digits")
    >>> ref.uri, ref.num_train, ref.num_validation, ref.num_test, ref.num_classes
    ('builtin:digits?seed=0&test=450&train=1347', 1347, 269, 450, 10)
    >>> resolve("builtin:shapes?train=100&seed=3").uri
    'builtin:shapes?seed=3&test=500&train=100'
    >>> try:
    ...     resolve("builtin:shapes?size=5")
    ... except DatasetError as e:
    ...     print(e)
    unknown parameter 'size' in 'builtin:shapes?size=5'; allowed: seed, test, train
    """
    if not isinstance(uri, str) or not uri.strip():
        raise DatasetError(f"dataset URI must be a non-empty string, got {uri!r}")
    uri = uri.strip()
    if uri.startswith("builtin:"):
        return _resolve_builtin(uri)
    if uri.startswith("file://"):
        parsed = urllib.parse.urlsplit(uri)
        if parsed.netloc not in ("", "localhost"):
            raise DatasetError(f"file URI must be local (file:///path), got {uri!r}")
        params = _parse_query(uri, parsed.query, allowed=("seed",))
        return _resolve_folder(urllib.parse.unquote(parsed.path), uri, data_root, params)
    if _SCHEME.match(uri):
        raise DatasetError(
            f"unsupported dataset URI {uri!r}: use builtin:NAME "
            f"({', '.join(BUILTIN_NAMES)}), a folder path, or file:///path"
        )
    return _resolve_folder(uri, uri, data_root, {})


def _parse_query(uri: str, query: str, allowed: tuple[str, ...]) -> dict[str, int]:
    params: dict[str, int] = {}
    if not query:
        return params
    for part in query.split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = urllib.parse.unquote(key)
        if key not in allowed:
            raise DatasetError(f"unknown parameter {key!r} in {uri!r}; allowed: {', '.join(sorted(allowed))}")
        if key in params:
            raise DatasetError(f"parameter {key!r} given twice in {uri!r}")
        if not sep or not re.fullmatch(r"\d{1,9}", value):
            raise DatasetError(f"parameter {key}={value!r} in {uri!r} must be a non-negative integer")
        params[key] = int(value)
    return params


def _resolve_builtin(uri: str) -> DatasetRef:
    name, _, query = uri[len("builtin:") :].partition("?")
    spec = _BUILTINS.get(name)
    if spec is None:
        raise DatasetError(
            f"unknown built-in dataset {name!r} in {uri!r}; known: " + ", ".join(f"builtin:{n}" for n in BUILTIN_NAMES)
        )
    params = _parse_query(uri, query, allowed=("seed", "test", "train"))
    train = params.get("train", spec.default_train)
    test = params.get("test", spec.default_test)
    seed = params.get("seed", 0)
    if train < spec.num_classes:
        raise DatasetError(
            f"train={train} in {uri!r} is too small: need at least {spec.num_classes} (the number of classes)"
        )
    limits = f"builtin:{name} allows at most train={spec.max_train}, test={spec.max_test}, train+test={spec.max_total}"
    if train > spec.max_train:
        raise DatasetError(f"train={train} in {uri!r} is too large: {limits}")
    if "test" not in params and train + test > spec.max_total:
        test = spec.max_total - train  # digits: a bigger train split takes it from test
    if test < 1:
        raise DatasetError(f"test={test} in {uri!r} must be at least 1")
    if test > spec.max_test or train + test > spec.max_total:
        raise DatasetError(f"{uri!r} asks for train={train}, test={test}: {limits}")
    if name == "fashion-mnist":
        _fashion_files(_fashion_dir())  # fails early and clearly when not installed
    canonical = f"builtin:{name}?seed={seed}&test={test}&train={train}"
    return DatasetRef(
        uri=canonical, kind="builtin", name=name, num_train=train, num_test=test, seed=seed,
        class_names=spec.class_names, image_size=spec.image_size, channels=spec.channels,
        num_validation=validation_count(train),
    )  # fmt: skip


def _env_data_root(data_root: str | os.PathLike[str] | None) -> str | None:
    if data_root is not None and str(data_root) != "":
        return str(data_root)
    from nasoa_contracts import DataSettings, load_settings

    root = load_settings(DataSettings).data_root
    return str(root) if root else None


def _resolve_folder(raw: str, uri: str, data_root: str | os.PathLike[str] | None, params: dict[str, int]) -> DatasetRef:
    root = _env_data_root(data_root)
    expanded = os.path.expanduser(raw)
    if root is not None:
        real_root = os.path.realpath(root)
        if not os.path.isdir(real_root):
            raise DatasetError(f"data root {root!r} (NASOA_DATA_ROOT) is not a directory")
        # realpath resolves '..' and symlinks before the check, so neither can escape.
        path = os.path.realpath(os.path.join(real_root, expanded))
        if not inside(path, real_root):
            raise DatasetError(
                f"dataset path {raw!r} is outside the data root {root!r}; "
                f"put the data under the root or change NASOA_DATA_ROOT"
            )
    else:
        real_root = None
        path = os.path.realpath(expanded)
    if not os.path.exists(path):
        raise DatasetError(f"dataset path {raw!r} does not exist (resolved to {path!r})")
    if not os.path.isdir(path):
        raise DatasetError(
            f"dataset path {raw!r} is not a directory; expected an ImageFolder layout "
            f"(train/ and val/ with one folder per class, or one folder per class)"
        )
    seed = params.get("seed", 0)
    scan = scan_folder(path, seed, real_root)
    return DatasetRef(
        uri="file://" + urllib.parse.quote(path) + (f"?seed={seed}" if seed else ""),
        kind="folder", name=path, num_train=len(scan.pool), num_test=len(scan.test), seed=seed,
        class_names=scan.class_names, layout=scan.layout, data_root=real_root,
        num_validation=len(scan.validation),
    )  # fmt: skip
