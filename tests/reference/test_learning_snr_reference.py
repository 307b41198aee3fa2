"""Parity of SNRDistance and SignalToNoiseRatioContrastiveLoss with pytorch-metric-learning 2.9
(float64, 1e-6 relative on values and gradients, see _pml_strict_b)."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_strict_b import RTOL
from _pml_strict_b import assert_loss_parity
from _pml_strict_b import labelled_batches
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M
from pytorch_metric_learning import reducers as R

import calibrax.metric_learning as C


@pytest.mark.parametrize("kwargs", [{}, {"normalize_embeddings": False, "power": 2}])
def test_snr_distance_matches_pml(kwargs):
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    q[1] = q[0]
    ours = C.SNRDistance(**kwargs)
    theirs = D.SNRDistance(**kwargs)
    for ref in (None, r):
        got = np.asarray(ours(jnp.asarray(q), None if ref is None else jnp.asarray(ref)))
        want = theirs(torch.tensor(q), None if ref is None else torch.tensor(ref)).numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12)
    # Identical rows are at distance exactly 0, as the explicit differences give.
    assert float(ours(jnp.asarray(q))[0, 1]) == 0.0


CONFIGS = {
    "defaults": (
        lambda: C.SignalToNoiseRatioContrastiveLoss(),
        lambda: L.SignalToNoiseRatioContrastiveLoss(),
    ),
    "margins_mean_reducer": (
        lambda: C.SignalToNoiseRatioContrastiveLoss(
            pos_margin=0.5, neg_margin=1.5, reducer=C.MeanReducer()
        ),
        lambda: L.SignalToNoiseRatioContrastiveLoss(
            pos_margin=0.5, neg_margin=1.5, reducer=R.MeanReducer()
        ),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_snr_contrastive_matches_pml(config):
    ours, theirs = CONFIGS[config]
    shapes = [(14, 6), (23, 9)] if config == "defaults" else [(14, 6)]
    for shape in shapes:
        assert_loss_parity(ours(), theirs(), labelled_batches(*shape, seed=shape[0]))


def test_snr_contrastive_with_miner_matches_pml():
    # The miners' own distance is SNR too, so that they mine on the loss's distance.
    our_miner = C.PairMarginMiner(pos_margin=0.4, neg_margin=0.9, distance=C.SNRDistance())
    their_miner = M.PairMarginMiner(pos_margin=0.4, neg_margin=0.9, distance=D.SNRDistance())
    ours, theirs = C.SignalToNoiseRatioContrastiveLoss(), L.SignalToNoiseRatioContrastiveLoss()
    assert_loss_parity(
        lambda e, l: ours(e, l, our_miner(e, l)),
        lambda e, l: theirs(e, l, their_miner(e, l)),
        labelled_batches(14, 6, seed=3),
    )


def test_above_256_samples_takes_the_general_path():
    # Contrastive evaluates only the upper block triangle above 256 samples; the SNR matrix is not
    # symmetric, so the SNR loss must not: compare with PML at 260 samples (value only, fast).
    rng = np.random.default_rng(1)
    emb, lab = rng.normal(size=(260, 8)), rng.integers(0, 60, size=260)
    got = float(C.SignalToNoiseRatioContrastiveLoss()(jnp.asarray(emb), jnp.asarray(lab)))
    want = float(L.SignalToNoiseRatioContrastiveLoss()(torch.tensor(emb), torch.tensor(lab)))
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_rejects_other_distances():
    with pytest.raises(
        ValueError, match=re.escape("expected `distance` to be a SNRDistance, got LpDistance")
    ):
        C.SignalToNoiseRatioContrastiveLoss(distance=C.LpDistance())
