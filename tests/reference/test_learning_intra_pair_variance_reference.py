"""Parity of calibrax.metric_learning.IntraPairVarianceLoss with pytorch-metric-learning 2.9
(float64, 1e-6 relative on values and gradients; see _pml_strict)."""

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


def test_intra_pair_variance_defaults_match_pml():
    values = assert_strict_parity(C.IntraPairVarianceLoss(), L.IntraPairVarianceLoss())
    assert values["all_singletons"] > 0  # negatives alone still give a loss
    assert values["mixed"] > 0


def test_intra_pair_variance_distance_eps_and_miner_match_pml():
    assert_strict_parity(
        C.IntraPairVarianceLoss(pos_eps=0.05, neg_eps=0.2, distance=C.LpDistance()),
        L.IntraPairVarianceLoss(pos_eps=0.05, neg_eps=0.2, distance=D.LpDistance()),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes", "duplicates"),
    )


# Above 256 samples, all pairs of the batch with itself and an inner-product similarity take
# another path: the two means in closed form from class sums, the pair terms from the blocks
# of the similarity matrix on and above the diagonal (blocks of 256 rows; 300 rows make a
# 44-row last block). The batches below are on that side of the switch; the (14, 6) and (33, 16)
# batches above stay on the other.
_BIG = 300


def _big_batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(_BIG, 12))
    return {
        "four_per_class": (emb, rng.permutation(np.arange(_BIG) // 4)),
        "few_classes": (emb + 0.5, rng.integers(0, 3, size=_BIG)),
        "one_class": (emb, np.zeros(_BIG, np.int64)),
        "all_singletons": (emb, np.arange(_BIG)),
    }


@pytest.fixture(scope="module")
def big_batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return _big_batches()


@pytest.mark.parametrize(
    ("make_ours", "make_theirs"),
    [
        (C.IntraPairVarianceLoss, L.IntraPairVarianceLoss),
        (
            lambda: C.IntraPairVarianceLoss(
                pos_eps=0.2,
                neg_eps=0.1,
                distance=C.DotProductSimilarity(normalize_embeddings=False),
            ),
            lambda: L.IntraPairVarianceLoss(
                pos_eps=0.2,
                neg_eps=0.1,
                distance=D.DotProductSimilarity(normalize_embeddings=False),
            ),
        ),
        # Not an inner product: the whole-matrix path at any size.
        (
            lambda: C.IntraPairVarianceLoss(distance=C.LpDistance()),
            lambda: L.IntraPairVarianceLoss(distance=D.LpDistance()),
        ),
    ],
    ids=["cosine", "raw_dot_product", "lp_distance"],
)
def test_intra_pair_variance_large_batches_match_pml(big_batches, make_ours, make_theirs):
    run = ours_value_and_grad_fn(make_ours())
    for name, (emb, lab) in big_batches.items():
        theirs = pml_value_and_grad(make_theirs(), emb, lab)
        assert_close(run(emb, lab), theirs, name)
        assert theirs[0] > 0, name


def test_intra_pair_variance_large_batch_float32_matches_pml(big_batches):
    # Float32 against PML's float64 (the exact value): the loss to 1e-6 relative, each gradient
    # entry to 2e-6 of the largest (PML's own float32 result meets the same bounds, checked).
    import jax
    import jax.numpy as jnp
    import torch

    emb, lab = big_batches["four_per_class"]
    truth_value, truth_grad = pml_value_and_grad(L.IntraPairVarianceLoss(), emb, lab)
    loss = C.IntraPairVarianceLoss()
    value, grad = jax.jit(jax.value_and_grad(lambda x, l: loss(x, l)))(
        jnp.asarray(emb, jnp.float32), jnp.asarray(lab, jnp.int32)
    )
    e = torch.tensor(emb, dtype=torch.float32, requires_grad=True)
    their_value = L.IntraPairVarianceLoss()(e, torch.tensor(lab))
    their_value.backward()
    scale = np.abs(truth_grad).max()
    for v, g in [(float(value), np.asarray(grad)), (float(their_value.detach()), e.grad.numpy())]:
        np.testing.assert_allclose(v, truth_value, rtol=1e-6)
        np.testing.assert_allclose(g.astype(np.float64), truth_grad, atol=2e-6 * scale)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_intra_pair_variance_large_batch_non_finite_is_nan(big_batches, bad):
    # The closed-form path above 256 samples, under jit: NaN, never a plausible number.
    import jax
    import jax.numpy as jnp

    emb, lab = big_batches["four_per_class"]
    emb = emb.copy()
    emb[7, 3] = bad
    loss = C.IntraPairVarianceLoss()
    value = jax.jit(lambda x, l: loss(x, l))(jnp.asarray(emb), jnp.asarray(lab, jnp.int32))
    assert np.isnan(float(value))
