"""calibrax.metric_learning distances against pytorch-metric-learning's (float64, rtol 1e-10: the same
formulas, rounding differences only; 30 rows make torch.cdist use its matmul path, as we do)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import distances as D

import calibrax.metric_learning as C

CASES = {
    "lp_default": (lambda: C.LpDistance(), lambda: D.LpDistance()),
    "lp_raw_squared": (
        lambda: C.LpDistance(normalize_embeddings=False, power=2),
        lambda: D.LpDistance(normalize_embeddings=False, power=2),
    ),
    "lp_p1": (lambda: C.LpDistance(p=1), lambda: D.LpDistance(p=1)),
    "lp_p3_power_half": (
        lambda: C.LpDistance(p=3, power=0.5, normalize_embeddings=False),
        lambda: D.LpDistance(p=3, power=0.5, normalize_embeddings=False),
    ),
    "cosine": (lambda: C.CosineSimilarity(), lambda: D.CosineSimilarity()),
    "cosine_power3": (lambda: C.CosineSimilarity(power=3), lambda: D.CosineSimilarity(power=3)),
    "dot_raw": (
        lambda: C.DotProductSimilarity(normalize_embeddings=False),
        lambda: D.DotProductSimilarity(normalize_embeddings=False),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matrix_matches_pml(name):
    ours, theirs = CASES[name]
    rng = np.random.default_rng(0)
    query, ref = rng.normal(size=(30, 5)), rng.normal(size=(20, 5))
    for q, r in ((query, None), (query, ref)):
        got = ours()(jnp.asarray(q), None if r is None else jnp.asarray(r))
        want = theirs()(torch.tensor(q), None if r is None else torch.tensor(r)).numpy()
        # The matmul form |x|²+|y|²-2x·y rounds at ~1e-15 absolute; zero distances are exact.
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-7)
    assert ours().is_inverted == theirs().is_inverted


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_pml_including_duplicates(name):
    ours, theirs = CASES[name]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4))
    x[3] = x[0]  # zero distance: the square root's derivative is infinite there
    weights = rng.normal(size=(8, 8))
    grad = jax.grad(lambda e: jnp.sum(ours()(e) * weights))(jnp.asarray(x))
    tx = torch.tensor(x, requires_grad=True)
    (theirs()(tx) * torch.tensor(weights)).sum().backward()
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(np.asarray(grad), tx.grad.numpy(), rtol=1e-6, atol=1e-9)
