"""Zoo store: registry, checkpoints (sha256 at every load), importers, malicious pickles."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import zoo_store
from zoo_store import (
    ChecksumMismatch,
    InvalidCheckpointError,
    ModelNotFound,
    UnsafeCheckpointError,
    ZooEntry,
    ZooStore,
)

TINY = "031-_8_1-2-2"


def _tiny_entry(name: str = "tiny", encoding: str = TINY) -> ZooEntry:
    return ZooEntry(
        name=name,
        family="etnas",
        architecture=encoding,
        num_params=0,
        macs=0,
        input_size=32,
        step_time_ms={"cpu": 1.0},
        source_accuracy=50.0,
        provenance={"search_run": "test", "seed": "0"},
    )


@pytest.fixture()
def store(tmp_path: Path) -> ZooStore:
    s = ZooStore(tmp_path / "zoo")
    torch.manual_seed(0)
    model = zoo_store.ETNAS(TINY, num_classes=5)
    s.register(_tiny_entry(), state_dict=model.state_dict())
    return s


def test_register_and_load_round_trip(store: ZooStore) -> None:
    entry = store.get_entry("tiny")
    assert entry.family == "etnas" and entry.architecture == TINY
    assert entry.num_params > 0 and entry.macs > 0 and entry.num_stages >= 2
    assert entry.provenance["num_classes"] == "5"
    blob = store.blob_path(entry.sha256)
    assert blob.is_file() and blob.stat().st_size == entry.size_bytes
    assert zoo_store.sha256_file(blob) == entry.sha256
    assert json.loads((store.root / "entries" / "tiny.json").read_text())["sha256"] == entry.sha256
    model = store.create_model("tiny", num_classes=3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    src = store.create_model("tiny")
    assert src(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    assert store.list_models("ti*") == ["tiny"] and store.list_models("x*") == []
    assert ZooEntry.from_proto(entry.to_proto()) == entry
    assert ZooEntry.from_json(entry.to_json()) == entry


def test_unknown_model_lists_available(store: ZooStore) -> None:
    with pytest.raises(ModelNotFound, match="tiny") as info:
        store.get_entry("nope")
    assert isinstance(info.value, LookupError)
    with pytest.raises(ModelNotFound):
        store.get_entry("../entries/tiny")


def test_duplicate_name_refused(store: ZooStore) -> None:
    with pytest.raises(FileExistsError):
        store.register(_tiny_entry(), state_dict=zoo_store.ETNAS(TINY, num_classes=5).state_dict())


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_blob_refused_at_load(store: ZooStore, damage: str) -> None:
    entry = store.get_entry("tiny")
    blob = store.blob_path(entry.sha256)
    data = bytearray(blob.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) - 100]
    blob.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="corrupt" if damage == "flip" else "truncated"):
        store.load_state_dict("tiny")
    with pytest.raises(ChecksumMismatch):
        store.create_model("tiny", num_classes=3)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    s = ZooStore(tmp_path / "zoo")
    other = zoo_store.ETNAS("031-_16_1-2-2", num_classes=5).state_dict()
    with pytest.raises(InvalidCheckpointError, match="does not fit"):
        s.register(_tiny_entry(), state_dict=other)
    assert s.list_models() == []


class _Payload:
    """Unpickling this calls Path.touch on the marker: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_pickle_refused_and_never_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "PWNED"
    state = zoo_store.ETNAS(TINY, num_classes=1000).state_dict()
    state["evil"] = _Payload(marker)  # type: ignore[assignment]
    path = tmp_path / "ET-NAS" / "ET-NAS-X" / f"{TINY}.pth"
    path.parent.mkdir(parents=True)
    if how == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f)
    assert not marker.exists()
    s = ZooStore(tmp_path / "zoo")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        zoo_store.import_etnas_pth(path, s)
    with pytest.raises(UnsafeCheckpointError):
        zoo_store.load_torch_weights(path)
    assert not marker.exists(), "the pickle's payload ran"
    assert s.list_models() == []


def test_import_released_etnas_pth(tmp_path: Path) -> None:
    # A stand-in for a released checkpoint: the reference layout, saved as a plain state dict.
    torch.manual_seed(0)
    encoding = zoo_store.OFFICIAL_ENCODINGS["ET-NAS-A"]
    model = zoo_store.ETNAS(encoding, num_classes=1000)
    path = tmp_path / "ET-NAS" / "ET-NAS-A" / f"{encoding}.pth"
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    s = ZooStore(tmp_path / "zoo")
    entry = zoo_store.import_etnas_pth(path, s)
    assert entry.name == "et-nas-a" and entry.architecture == encoding
    assert entry.source_accuracy == pytest.approx(62.06)
    assert entry.input_size == 224 and abs(entry.num_params - 2.6e6) / 2.6e6 < 0.03
    loaded = s.create_model("et-nas-a")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # A plain "<encoding>.pth" file name works too; a wrong encoding in the name is refused.
    plain = tmp_path / f"{TINY}.pth"
    torch.save(zoo_store.ETNAS(TINY, num_classes=10).state_dict(), plain)
    assert zoo_store.import_etnas_pth(plain, s).architecture == TINY
    wrong = tmp_path / "031-_16_1-2-2.pth"
    torch.save(zoo_store.ETNAS(TINY, num_classes=10).state_dict(), wrong)
    with pytest.raises(InvalidCheckpointError, match="does not fit"):
        zoo_store.import_etnas_pth(wrong, s)
    with pytest.raises(zoo_store.InvalidEncodingError):
        zoo_store.import_etnas_pth(tmp_path / "not-an-encoding.pth", s)


def test_import_torchvision_local_weights(tmp_path: Path) -> None:
    import torchvision

    weights = tmp_path / "mnv3s.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).state_dict(), weights)
    s = ZooStore(tmp_path / "zoo")
    entry = zoo_store.import_torchvision("mobilenet_v3_small", weights, s, input_size=32)
    assert entry.family == "torchvision" and entry.name == "tv-mobilenet-v3-small"
    model = s.create_model(entry.name, num_classes=4)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4)
    groups = zoo_store.stage_modules(model)
    assert len(groups) == entry.num_stages + 1
    with pytest.raises(ValueError, match="unknown torchvision"):
        zoo_store.import_torchvision("resnet9000", weights, s)


def test_atomic_write_leaves_no_temp_files(store: ZooStore) -> None:
    leftovers = [p for p in store.root.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_default_store_env(tmp_path: Path, store: ZooStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NASOA_ZOO_DIR", str(store.root))
    assert zoo_store.list_models() == ["tiny"]
    assert zoo_store.get_entry("tiny").architecture == TINY
    assert zoo_store.create_model("tiny", num_classes=2)(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ModelNotFound, match="available: tiny"):
        zoo_store.create_model("missing")
    monkeypatch.delenv("NASOA_ZOO_DIR")
    assert os.fspath(zoo_store.default_store().root) == os.fspath(zoo_store.DEFAULT_ZOO_DIR)
