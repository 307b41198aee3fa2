"""The speed-ups of calibrax.learning against the plain formulations they replace: the one-matmul
backward pass of the symmetric Gram matrix and the sort-based all-triplets hinge."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import calibrax.learning as C
from calibrax.learning.distances.base_distance import gram_symmetric_cotangent
from calibrax.learning.losses.triplet_margin import _row_hinge_sums

X = jax.random.normal(jax.random.key(0), (9, 5), jnp.float64)


def test_gram_symmetric_cotangent_gradient_matches_autodiff():
    # An elementwise function of the Gram matrix has a symmetric cotangent: the custom backward
    # (2 g @ x) must then equal autodiff of x @ x.T (float64, rounding only: 1e-12).
    def f(gram):
        return lambda x: jnp.sum(jnp.sin(gram(x)) ** 2)

    fast = jax.grad(f(gram_symmetric_cotangent))(X)
    plain = jax.grad(f(lambda x: x @ x.T))(X)
    np.testing.assert_allclose(fast, plain, rtol=1e-12, atol=1e-12)


def test_symmetric_distance_gradient_is_finite_at_duplicates():
    # Duplicate rows put exact zeros in the distance matrix, where the square root's derivative
    # is infinite: the gradient must be finite and match the plain distance's (1e-12, float64).
    x = X.at[1].set(X[0]).at[4].set(X[0])
    d = C.LpDistance()

    def f(mat):
        return jnp.sum(jnp.cos(mat))

    fast = jax.grad(lambda e: f(d.self_matrix_symmetric_grad(e)))(x)
    plain = jax.grad(lambda e: f(d(e)))(x)
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, plain, rtol=1e-12, atol=1e-12)


def test_row_hinge_sums_match_loops_and_gradients():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(6, 6))
    x = rng.normal(size=(6, 6))
    pos, neg = rng.random((6, 6)) < 0.5, rng.random((6, 6)) < 0.6
    tm, xm = np.where(pos, t, -np.inf), np.where(neg, x, np.inf)
    total, count = _row_hinge_sums(jnp.asarray(tm), jnp.asarray(xm))
    # Hand-written loops over (anchor, positive, negative), float64: 1e-12.
    want_total = [
        sum(
            max(t[a, p] - x[a, n], 0.0)
            for p in range(6)
            if pos[a, p]
            for n in range(6)
            if neg[a, n]
        )
        for a in range(6)
    ]
    want_count = [
        [sum(1 for n in range(6) if neg[a, n] and x[a, n] < tm[a, p]) for p in range(6)]
        for a in range(6)
    ]
    np.testing.assert_allclose(total, want_total, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(count, want_count)

    # Gradients of the total w.r.t. the finite entries, against finite differences (check_grads'
    # default tolerances; no hinge sits within the step of its kink for this seed).
    def f(tv, xv):
        tt = jnp.where(jnp.asarray(pos), tv, -jnp.inf)
        xx = jnp.where(jnp.asarray(neg), xv, jnp.inf)
        return _row_hinge_sums(tt, xx)[0]

    check_grads(f, (jnp.asarray(t), jnp.asarray(x)), order=1, modes=["rev"])
