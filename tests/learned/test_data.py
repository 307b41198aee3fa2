"""2AFC data: the synthetic generator's determinism and judgment, the BAPPS folder loaders."""

import itertools
import re

import numpy as np
import pytest
from PIL import Image

from calibrax.core.protocols import BatchableDatasetProtocol
from calibrax.learned import DISTORTIONS
from calibrax.learned import JNDFolder
from calibrax.learned import SyntheticTwoAFC
from calibrax.learned import TwoAFCFolder
from calibrax.learned import distort


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]


def test_synthetic_is_deterministic_and_well_formed(images):
    ds = SyntheticTwoAFC(20, patch_size=32, seed=5, images=images)
    assert isinstance(ds, BatchableDatasetProtocol)
    a, b = ds[7], SyntheticTwoAFC(20, patch_size=32, seed=5, images=images)[7]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["ref"].shape == a["p0"].shape == (32, 32, 3) and a["ref"].dtype == np.float32
    batch = ds.get_batch(8, 4)
    assert batch["ref"].shape == (8, 32, 32, 3) and batch["judge"].shape == (8,)
    np.testing.assert_array_equal(batch["p1"][3], ds[7]["p1"])
    other = SyntheticTwoAFC(20, patch_size=32, seed=6, images=images)[7]
    assert not np.array_equal(a["p0"], other["p0"])


def test_judgment_is_the_documented_sigmoid_of_level_difference(images):
    ds = SyntheticTwoAFC(200, patch_size=16, seed=0, images=images)
    judges = np.array([ds[i]["judge"] for i in range(200)])
    allowed = 1 / (1 + np.exp(-np.arange(-4, 5) / 0.5))
    assert np.all(np.min(np.abs(judges[:, None] - allowed[None]), axis=1) < 1e-6)
    assert np.any(judges == 0.5) and judges.min() < 0.1 and judges.max() > 0.9


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_distortions_are_graded(kind):
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    patch = np.stack([yy, xx, 0.5 * (yy + xx)], -1).astype(np.float32)
    errs = []
    for level in range(1, 6):
        out = distort(patch, kind, level, np.random.default_rng(1))
        assert out.shape == patch.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        errs.append(float(np.mean((out - patch) ** 2)))
    # Stronger levels change the patch more (mean squared error is non-decreasing).
    assert all(b >= a * 0.999 for a, b in itertools.pairwise(errs)), errs
    assert errs[0] > 0


def test_synthetic_bad_arguments(images):
    with pytest.raises(
        ValueError, match=re.escape("expected `images[0]` to be at least 64x64, got 40x50")
    ):
        SyntheticTwoAFC(4, patch_size=64, images=images)
    with pytest.raises(ValueError, match=re.escape("expected `distortions` to be one of")):
        SyntheticTwoAFC(4, patch_size=16, images=images, distortions=("warp",))
    with pytest.raises(
        ValueError, match=re.escape("expected `num_examples` to be a positive integer, got 0")
    ):
        SyntheticTwoAFC(0, images=images)
    with pytest.raises(IndexError, match=re.escape("expected `idx` in [0, 3], got 4")):
        SyntheticTwoAFC(4, patch_size=16, images=images)[4]
    with pytest.raises(
        ValueError, match=re.escape("expected `level` to be one of 1, 2, 3, 4, 5, got 6")
    ):
        distort(np.zeros((8, 8, 3), np.float32), "blur", 6, np.random.default_rng(0))


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_bapps_2afc_and_jnd_layouts(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        for sub in ("ref", "p0", "p1"):
            _png(
                tmp_path / "2afc" / sub / f"{i:06d}.png",
                rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
            )
        (tmp_path / "2afc" / "judge").mkdir(exist_ok=True)
        np.save(tmp_path / "2afc" / "judge" / f"{i:06d}.npy", np.array([0.25 * i]))
        for sub in ("p0", "p1"):
            _png(
                tmp_path / "jnd" / sub / f"{i:06d}.png",
                rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
            )
        (tmp_path / "jnd" / "same").mkdir(exist_ok=True)
        np.save(tmp_path / "jnd" / "same" / f"{i:06d}.npy", np.array([0.5]))
    ds = TwoAFCFolder(tmp_path / "2afc")
    assert len(ds) == 3 and isinstance(ds, BatchableDatasetProtocol)
    batch = ds.get_batch(3, 0)
    np.testing.assert_allclose(batch["judge"], [0.0, 0.25, 0.5])
    want = np.asarray(Image.open(tmp_path / "2afc" / "p1" / "000002.png"), np.float32) / 255
    np.testing.assert_array_equal(batch["p1"][2], want)
    jnd = JNDFolder(tmp_path / "jnd")
    assert jnd[1]["same"] == np.float32(0.5)

    (tmp_path / "2afc" / "p0" / "000001.png").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=re.escape("expected `p0/000001.png` for every reference, got it missing"),
    ):
        TwoAFCFolder(tmp_path / "2afc")
    with pytest.raises(
        FileNotFoundError, match=re.escape("expected a BAPPS folder with a `ref/` subfolder")
    ):
        TwoAFCFolder(tmp_path / "nothing")


def test_observer_judgment_is_the_sigmoid_of_severity_difference(images):
    from calibrax.learned.data import OBSERVER_TEMPERATURE

    calls = []

    def observer(ref, p):  # mean absolute difference: any per-pair function of the pixels
        calls.append(len(ref))
        return np.abs(ref - p).mean(axis=(1, 2, 3))

    ds = SyntheticTwoAFC(
        70, patch_size=16, seed=3, images=images, judge="observer", observer=observer
    )
    sev = ds.severities()
    assert sev.shape == (70, 2) and calls == [64, 64, 6, 6]  # batches of 64, computed once
    ds.severities()
    assert len(calls) == 4
    for i in (0, 33, 69):
        ex = ds[i]
        want = [np.abs(ex["ref"] - ex["p0"]).mean(), np.abs(ex["ref"] - ex["p1"]).mean()]
        np.testing.assert_allclose(sev[i], want, rtol=1e-6)
        expected = 1 / (1 + np.exp(-(sev[i, 0] - sev[i, 1]) / OBSERVER_TEMPERATURE))
        assert ex["judge"] == pytest.approx(expected, abs=1e-6)
    # The level judge's severities are the levels.
    levels = SyntheticTwoAFC(70, patch_size=16, seed=3, images=images)
    np.testing.assert_array_equal(levels.severities(), levels.levels())


def test_textured_patches_and_bad_judge(images):
    flat = [np.full((40, 50, 3), 128, np.uint8), images[0]]
    ds = SyntheticTwoAFC(30, patch_size=16, seed=0, images=flat)
    # Flat patches are redrawn (up to PATCH_TRIES times) until the pixel std reaches 0.1; a
    # constant image never does, so its patches stay flat, the random one's are textured.
    stds = np.array([ds[i]["ref"].std() for i in range(30)])
    assert np.all((stds == 0) | (stds >= 0.1)) and np.any(stds >= 0.1)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `judge` to be one of 'levels', 'observer', got 'human'"),
    ):
        SyntheticTwoAFC(4, patch_size=16, images=images, judge="human")
