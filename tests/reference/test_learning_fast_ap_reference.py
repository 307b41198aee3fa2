"""Parity of calibrax.metric_learning.FastAPLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pml_parity import ours_value_and_grad_fn
from _pml_parity import pml_value_and_grad
from _pml_strict import assert_close
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C


def test_fast_ap_defaults_match_pml():
    values = assert_strict_parity(C.FastAPLoss(), L.FastAPLoss())
    assert values["all_singletons"] == 0.0
    assert values["mixed"] > 0


def test_fast_ap_bins_power_and_miner_match_pml():
    assert_strict_parity(
        C.FastAPLoss(num_bins=4, distance=C.LpDistance()),
        L.FastAPLoss(num_bins=4, distance=D.LpDistance()),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_bins": 0}, "expected `num_bins` to be a positive integer, got 0"),
        (
            {"distance": C.CosineSimilarity()},
            "expected `distance` to be LpDistance(normalize_embeddings=True, p=2, power=...), "
            "got CosineSimilarity(",
        ),
    ],
)
def test_fast_ap_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        C.FastAPLoss(**kwargs)


def _large_batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    # 300 rows: above the 256 anchors of one step, so the forward pass loops over blocks of 64
    # anchors with 20 padded rows. Repeated rows put distances exactly on the centre 0, and
    # rows equal to minus another exactly on the last centre (4).
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(300, 12))
    emb[7] = emb[3]
    emb[150] = -emb[149]
    return emb, rng.integers(0, 40, size=300)


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_ap_blocked_histograms_match_pml(seed):
    # The path above 256 rows (a loop over blocks of anchors) against PML 2.9, float64: values
    # and gradients to 1e-6 relative (the strict-parity bound of issue 16).
    emb, lab = _large_batch(seed)
    ours = ours_value_and_grad_fn(C.FastAPLoss())(emb, lab)
    assert_close(ours, pml_value_and_grad(L.FastAPLoss(), emb, lab), f"seed {seed}")


def test_fast_ap_float32_matches_pml_float64():
    # float32 on both sides of the 256-row switch against PML in float64: loss to 1e-5
    # relative, gradients to 1e-5 of the largest entry (float32 rounding of the distances moves
    # the kernel weights by ~1e-7 / width).
    cases = [_large_batch(2), (_large_batch(3)[0][:200], _large_batch(3)[1][:200])]
    loss = C.FastAPLoss()
    step = jax.jit(jax.value_and_grad(lambda e, l: loss(e, l)))
    for emb, lab in cases:
        value, grad = step(jnp.asarray(emb, jnp.float32), jnp.asarray(lab, jnp.int32))
        want, want_grad = pml_value_and_grad(L.FastAPLoss(), emb, lab)
        np.testing.assert_allclose(float(value), want, rtol=1e-5)
        scale = np.abs(want_grad).max()
        np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("rows", [40, 300])
def test_fast_ap_closed_form_backward_matches_autodiff(rows):
    # The custom VJP of the histograms (symmetrised cotangent, kernel slopes summed over the
    # bins) against autodiff of the plain (B, B, bins) formula, float64, on both sides of the
    # 256-row switch: rounding only.
    from calibrax.metric_learning.distances.base_distance import safe_abs

    emb, lab = _large_batch(4)
    emb, lab = jnp.asarray(emb[:rows]), jnp.asarray(lab[:rows] % 9, jnp.int32)
    loss = C.FastAPLoss()

    def plain(x):
        same = lab[:, None] == lab[None, :]
        positive = same & ~jnp.eye(rows, dtype=bool)
        dist = C.LpDistance(power=2)(x)
        centres = jnp.linspace(0.0, 4.0, 11, dtype=dist.dtype)
        pulse = jax.nn.relu(1 - safe_abs(dist[:, :, None] - centres[None, None, :]) / 0.4)
        pos = jnp.sum(jnp.where(positive[:, :, None], pulse, 0), axis=1)
        tot = jnp.cumsum(pos + jnp.sum(jnp.where(same[:, :, None], 0, pulse), axis=1), axis=1)
        product = pos * jnp.cumsum(pos, axis=1)
        kept = (product > 0) & (tot > 0)
        ap = jnp.sum(jnp.where(kept, product / jnp.where(kept, tot, 1), 0), axis=1)
        n_pos = jnp.sum(positive, axis=1)
        valid = (n_pos > 0) & jnp.any(kept)
        values = jnp.where(valid, 1 - ap / jnp.maximum(n_pos, 1).astype(x.dtype), 0)
        return jnp.sum(values) / jnp.sum(valid.astype(x.dtype))

    got = jax.jit(jax.value_and_grad(lambda x: loss(x, lab)))(emb)
    want = jax.jit(jax.value_and_grad(plain))(emb)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-12)
