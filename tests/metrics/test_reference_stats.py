"""Reference statistics files: one .npz with the real side of FID, KID and PRDC.

Round trips are bit-exact (state and compute()), pytorch-fid's mu/sigma files load (and
pytorch-fid reads ours), a file that does not fit the metric is refused with an "expected X,
got Y" naming the file and the setting, and a changed or corrupted file is refused.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.backbones import build
from calibrax.core import MetricState
from calibrax.metrics import FrechetDistance
from calibrax.metrics import GenerativeMetrics
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall
from calibrax.metrics import read_reference
from calibrax.metrics.random_backbone import RandomConvBackbone
from calibrax.metrics.reference import backbone_name
from calibrax.metrics.reference import content_sha256

D, C = 6, 5
RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(40, D))
FAKE = RNG.normal(size=(30, D)) * 1.2 + 0.3
LOGITS = RNG.normal(size=(30, C))
OPTIONS = {
    "fid": {},
    "kid": {"subsets": 3, "subset_size": 10},
    "is": {"splits": 2},
    "prdc": {"k": 3},
}


def _fid(**kw):
    kw.setdefault("backbone", None)
    return FrechetDistance(num_features=D, **kw)


def _kid(**kw):
    kw.setdefault("max_samples", 50)
    kw.setdefault("backbone", None)
    return KernelDistance(num_features=D, subsets=3, subset_size=10, **kw)


def _prdc(**kw):
    kw.setdefault("max_samples", 50)
    kw.setdefault("backbone", None)
    return PrecisionRecall(num_features=D, k=3, **kw)


def _collection(**kw):
    return GenerativeMetrics(
        backbone=None, num_features=D, num_classes=C, max_samples=50, metrics=OPTIONS, **kw
    )


MAKERS = {"fid": _fid, "kid": _kid, "prdc": _prdc, "collection": _collection}


def _fake(metric):
    if isinstance(metric, GenerativeMetrics):
        metric.update(features=jnp.asarray(FAKE), logits=jnp.asarray(LOGITS), real=False)
    else:
        metric.update(features=jnp.asarray(FAKE), real=False)


def _state(metric):
    return {
        path: np.asarray(var[...])
        for path, var in nnx.to_flat_state(nnx.state(metric, MetricState))
    }


def _pytorch_fid_file(path, rows=REAL):
    np.savez(path, mu=rows.mean(0), sigma=np.cov(rows, rowvar=False))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_round_trip_is_bit_exact(tmp_path, kind, dtype):
    make = MAKERS[kind]
    saved = make(dtype=dtype)
    saved.update(features=jnp.asarray(REAL), real=True)
    saved.save_reference(tmp_path / "ref.npz")
    loaded = make(dtype=dtype)
    loaded.load_reference(tmp_path / "ref.npz")
    for metric in (saved, loaded):
        _fake(metric)
    want, got = _state(saved), _state(loaded)
    assert want.keys() == got.keys()
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=str(path))
    want_values, got_values = saved.compute(), loaded.compute()
    assert want_values.keys() == got_values.keys()
    for key, value in want_values.items():
        assert np.asarray(got_values[key]) == np.asarray(value), key


def test_file_records_the_settings_and_keeps_pytorch_fid_keys(tmp_path):
    metric = GenerativeMetrics(
        backbone=RandomConvBackbone(rngs=nnx.Rngs(0)),
        metrics={"fid": {}, "prdc": {"k": 3}},
        max_samples=50,
        normalize=True,
    )
    rows = np.asarray(REAL[:, :1].repeat(32, axis=1) + np.arange(32), np.float32)
    wide = rows.astype(np.float64)
    metric.update(features=jnp.asarray(wide), real=True)
    digest = metric.save_reference(tmp_path / "ref")  # the name is used as given
    with np.load(tmp_path / "ref") as data:
        arrays = {k: data[k] for k in data.files}
    assert str(arrays["backbone"]) == "RandomConvBackbone (module)"
    assert str(arrays["resize"]) == "bilinear"
    assert bool(arrays["normalize"]) is True
    assert int(arrays["num_features"]) == 32 and int(arrays["num_samples"]) == 40
    assert str(arrays["dtype"]) == "float64" and int(arrays["calibrax_reference"]) == 1
    assert str(arrays["sha256"]) == digest == content_sha256(arrays)
    # pytorch-fid's keys in float64; the rows in float32, which holds them exactly.
    np.testing.assert_allclose(arrays["mu"], wide.mean(0), rtol=1e-12)
    np.testing.assert_allclose(arrays["sigma"], np.cov(wide, rowvar=False), rtol=1e-9)
    assert arrays["mu"].dtype == arrays["sigma"].dtype == np.float64
    assert arrays["real_features"].dtype == np.float32
    np.testing.assert_array_equal(arrays["real_features"], rows)


def test_backbone_names():
    assert backbone_name("inception-v3-fid") == "inception-v3-fid"
    assert backbone_name(None) is None
    # A module of a registered class is recorded by its zoo name (its weights are not checked).
    assert backbone_name(build("efficientnet-lite0")) == "efficientnet-lite0"
    assert backbone_name(RandomConvBackbone(rngs=nnx.Rngs(0))) == "RandomConvBackbone (module)"


def test_pytorch_fid_reads_our_file(tmp_path):
    import scipy.linalg

    metric = _fid()
    metric.update(features=jnp.asarray(REAL), real=True)
    metric.save_reference(tmp_path / "ref.npz")
    # pytorch-fid's loader (fid_score._compute_statistics_of_path) and formula, in float64.
    with np.load(tmp_path / "ref.npz") as f:
        m1, s1 = f["mu"][:], f["sigma"][:]
    m2, s2 = FAKE.mean(0), np.cov(FAKE, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
    theirs = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    metric.update(features=jnp.asarray(FAKE), real=False)
    assert float(metric.compute()["frechet_distance"]) == pytest.approx(theirs, rel=1e-9)


def test_pytorch_fid_and_legacy_files_load(tmp_path):
    reference = _fid()
    reference.update(features=jnp.asarray(REAL), real=True)
    _fake(reference)
    want = float(reference.compute()["frechet_distance"])
    _pytorch_fid_file(tmp_path / "pfid.npz")
    reference.save_real_statistics(tmp_path / "legacy.npz")
    for path, count in ((tmp_path / "pfid.npz", 40), (tmp_path / "legacy.npz", None)):
        for metric in (_fid(), GenerativeMetrics(backbone=None, num_features=D, metrics="fid")):
            metric.load_reference(path, num_samples=count)
            _fake(metric)
            assert float(metric.compute()["frechet_distance"]) == pytest.approx(want, rel=1e-9)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected `num_samples` for the reference `{tmp_path / 'pfid.npz'}`, which has no "
            "`num_samples` key (pytorch-fid files store only `mu` and `sigma`), got None"
        ),
    ):
        _fid().load_reference(tmp_path / "pfid.npz")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `num_samples` to match the 40 samples recorded in the reference "
            f"`{tmp_path / 'legacy.npz'}`, got 7"
        ),
    ):
        _fid().load_reference(tmp_path / "legacy.npz", num_samples=7)


def test_rows_only_reference_gives_fid_the_statistics_of_its_rows(tmp_path):
    kid = _kid()
    kid.update(features=jnp.asarray(REAL), real=True)
    kid.save_reference(tmp_path / "kid.npz")
    assert "mu" not in read_reference(tmp_path / "kid.npz").arrays
    fid = _fid()
    fid.load_reference(tmp_path / "kid.npz")
    direct = _fid()
    direct.update(features=jnp.asarray(REAL), real=True)
    for metric in (fid, direct):
        _fake(metric)
    assert float(fid.compute()["frechet_distance"]) == pytest.approx(
        float(direct.compute()["frechet_distance"]), rel=1e-10
    )


def test_kid_needs_rows_and_a_refused_file_changes_nothing(tmp_path):
    path = tmp_path / "pfid.npz"
    _pytorch_fid_file(path)
    message = re.escape(
        f"expected the reference `{path}` to hold the real feature rows (`real_features`) for "
        "KernelDistance, got only FID statistics (`mu`, `sigma`); write it with `calibrax stats` "
        "or save_reference of KernelDistance, PrecisionRecall or GenerativeMetrics"
    )
    with pytest.raises(ValueError, match=message):
        _kid().load_reference(path)
    metric = _collection()
    metric.update(features=jnp.asarray(REAL[:20]), real=True)
    before = _state(metric)
    with pytest.raises(
        ValueError,
        match=message.replace("KernelDistance", "KernelDistance and PrecisionRecall", 1),
    ):
        metric.load_reference(path, num_samples=40)
    after = _state(metric)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)


def _saved(tmp_path, metric, name="ref.npz"):
    metric.update(features=jnp.asarray(REAL), real=True)
    metric.save_reference(tmp_path / name)
    return tmp_path / name


def test_settings_mismatches_are_refused(tmp_path):
    backbone = RandomConvBackbone(num_features=D, rngs=nnx.Rngs(0))

    class OtherBackbone(RandomConvBackbone):
        pass

    path = _saved(tmp_path, _kid(backbone=backbone))
    other = OtherBackbone(num_features=D, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected the reference `{path}` to come from the backbone 'OtherBackbone (module)' "
            "(the metric's `backbone`), got 'RandomConvBackbone (module)'"
        ),
    ):
        _kid(backbone=other).load_reference(path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected the reference `{path}` to use the resize mode 'tf1' (the metric's "
            "`resize_method`), got 'bilinear'"
        ),
    ):
        _fid(backbone=backbone, resize_method="tf1").load_reference(path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected the reference `{path}` to have 5 features (the metric's `num_features`), "
            "got 6"
        ),
    ):
        FrechetDistance(backbone=None, num_features=5).load_reference(path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected the reference `{path}` to hold at most 30 real rows (the metric's "
            "`max_samples`), got 40"
        ),
    ):
        _prdc(max_samples=30).load_reference(path)
    # Without a backbone the metric does not know its backbone or resize mode: not checked.
    _prdc().load_reference(path)


def test_changed_or_corrupted_file_is_refused(tmp_path):
    path = _saved(tmp_path, _collection())
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    stored = str(arrays["sha256"])
    # Edited and written again as a valid .npz, with the old hash.
    arrays["real_features"] = arrays["real_features"].copy()
    arrays["real_features"][3, 2] += 1e-3
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected the content of `{tmp_path / 'edited.npz'}` to match its stored sha256 "
            f"{stored}, got {content_sha256(arrays)}: the file was changed or corrupted after it "
            "was saved"
        ),
    ):
        _collection().load_reference(tmp_path / "edited.npz")
    # One flipped byte inside sigma's data: the zip's CRC refuses it.
    raw = bytearray(path.read_bytes())
    sigma = np.asarray(arrays["sigma"]).tobytes()
    at = raw.index(sigma) + len(sigma) // 2
    raw[at] ^= 0x01
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected `{tmp_path / 'flipped.npz'}` to be an intact .npz reference file, got an "
            "unreadable file (BadZipFile: Bad CRC-32 for file 'sigma.npy')"
        ),
    ):
        _fid().load_reference(tmp_path / "flipped.npz")
    with pytest.raises(
        ValueError,
        match=re.escape(f"expected an existing reference file, got '{tmp_path / 'none.npz'}'"),
    ):
        read_reference(tmp_path / "none.npz")


def test_save_needs_a_real_side():
    only_is = GenerativeMetrics(backbone=None, num_features=D, num_classes=C, metrics="is")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected a member with a real side (fid, kid or prdc) to save a reference, "
            "got the members ('is',)"
        ),
    ):
        only_is.save_reference("unused.npz")
    kid = _kid()
    kid.update(features=jnp.asarray(REAL[:1]), real=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected at least 2 real samples to save a reference of KernelDistance, got 1"
        ),
    ):
        kid.save_reference("unused.npz")
