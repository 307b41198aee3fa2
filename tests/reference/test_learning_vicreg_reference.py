"""Parity of calibrax.metric_learning.VICRegLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on the value and on the gradients w.r.t. both views, see _pml_strict_b)."""

import numpy as np
import pytest
from _pml_strict_b import RTOL
from _pml_strict_b import VALUE_ATOL
from _pml_strict_b import assert_close
from _pml_strict_b import ours_value_and_grad
from _pml_strict_b import pml_value_and_grad
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import reducers as R

import calibrax.metric_learning as C


def views(batch, dim, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, dim))
    cases = {
        "noisy_views": (z, z + 0.3 * rng.normal(size=(batch, dim))),
        "independent": (z, rng.normal(size=(batch, dim))),
        # Small spread: every variance term is active (std below 1).
        "collapsed": (0.1 * z, 0.05 * rng.normal(size=(batch, dim))),
    }
    two = rng.normal(size=(2, dim))
    return cases, {"two_samples": (two, two[::-1].copy())}


CONFIGS = {
    "defaults": (lambda: C.VICRegLoss(), lambda: L.VICRegLoss()),
    "weights_sum_reducer": (
        lambda: C.VICRegLoss(
            invariance_lambda=2.0,
            variance_mu=3.0,
            covariance_v=0.5,
            eps=1e-2,
            reducer=C.SumReducer(),
        ),
        lambda: L.VICRegLoss(
            invariance_lambda=2.0,
            variance_mu=3.0,
            covariance_v=0.5,
            eps=1e-2,
            reducer=R.SumReducer(),
        ),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_vicreg_matches_pml(config):
    make_ours, make_theirs = CONFIGS[config]
    ours, theirs = make_ours(), make_theirs()
    both = ours_value_and_grad(lambda e, r: ours(e, ref_emb=r), argnums=(0, 1))
    alone = ours_value_and_grad(lambda e: ours(e))
    for shape in [(12, 5), (7, 16)]:
        cases, small = views(*shape, seed=shape[0])
        for name, (e, r) in {**cases, **(small if shape == (7, 16) else {})}.items():
            v1, (g1, gr1) = both(e, r)
            v2, (g2, gr2) = pml_value_and_grad(lambda a, b: theirs(a, ref_emb=b), e, r, wrt=(0, 1))
            np.testing.assert_allclose(v1, v2, rtol=RTOL, atol=VALUE_ATOL, err_msg=name)
            assert_close(g1, g2, name)
            assert_close(gr1, gr2, name)
        # No reference: the batch against itself.
        e = cases["noisy_views"][0]
        v1, g1 = alone(e)
        v2, (g2,) = pml_value_and_grad(lambda a: theirs(a), e)
        np.testing.assert_allclose(v1, v2, rtol=RTOL, atol=VALUE_ATOL)
        assert_close(g1, g2, "self")
