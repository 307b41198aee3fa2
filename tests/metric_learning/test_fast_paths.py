"""The speed-ups of calibrax.metric_learning against the plain formulations they replace: the one-matmul
backward pass of the symmetric Gram matrix and the sort-based all-triplets hinge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import calibrax.metric_learning as C
from calibrax.metric_learning.distances.base_distance import gram_cross_block
from calibrax.metric_learning.distances.base_distance import gram_symmetric_cotangent
from calibrax.metric_learning.losses.triplet_margin import _row_hinge_sums

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


def _plain_l2(q, r, power):
    # The explicit differences, differentiated by autodiff; exact zeros where rows coincide.
    sq = jnp.sum((q[:, None, :] - r[None, :, :]) ** 2, axis=-1)
    keep = sq > 1e-12
    d = jnp.where(keep, jnp.sqrt(jnp.where(keep, sq, 1.0)), 0.0)
    return d**power


@pytest.mark.parametrize("power", [1, 2, 1.5])
def test_l2_matrix_written_out_backward_matches_autodiff(power):
    # LpDistance(p=2)'s custom backward pass (all three inner-product modes) against autodiff of
    # the explicit-difference formula, float64, with a duplicated row (distance 0, gradient 0
    # there): rounding only, 1e-11.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(9, 5)))
    x = x.at[3].set(x[5])
    r = jnp.asarray(rng.normal(size=(7, 5)))
    w = jnp.asarray(rng.normal(size=(9, 9)))
    d = C.LpDistance(normalize_embeddings=False, power=power)

    def check(fast, plain, *args):
        got = jax.grad(fast, argnums=tuple(range(len(args))))(*args)
        want = jax.grad(plain, argnums=tuple(range(len(args))))(*args)
        for g, h in zip(got, want, strict=True):
            assert np.all(np.isfinite(g))
            np.testing.assert_allclose(g, h, rtol=1e-11, atol=1e-11)

    # Plain mode, self matrix (both roles summed) and query vs ref.
    check(
        lambda e: jnp.sum(jnp.sin(d(e)) * w),
        lambda e: jnp.sum(jnp.sin(_plain_l2(e, e, power)) * w),
        x,
    )
    check(
        lambda e, q: jnp.sum(jnp.sin(d(e, q)) * w[:, :7]),
        lambda e, q: jnp.sum(jnp.sin(_plain_l2(e, q, power)) * w[:, :7]),
        x,
        r,
    )
    # Symmetric mode: a symmetric cotangent (elementwise function of the matrix).
    check(
        lambda e: jnp.sum(jnp.cos(d.self_matrix_symmetric_grad(e))),
        lambda e: jnp.sum(jnp.cos(_plain_l2(e, e, power))),
        x,
    )
    # Cross mode: two different blocks.
    check(
        lambda e, q: jnp.sum(jnp.sin(d.normalized_block_matrix(e, q, "cross")) * w[:, :7]),
        lambda e, q: jnp.sum(jnp.sin(_plain_l2(e, q, power)) * w[:, :7]),
        x,
        r,
    )


def test_gram_cross_block_gradient_matches_autodiff():
    rng = np.random.default_rng(2)
    q, r = jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.normal(size=(8, 4)))
    w = jnp.asarray(rng.normal(size=(6, 8)))
    got = jax.grad(lambda a, b: jnp.sum(jnp.tanh(gram_cross_block(a, b)) * w), (0, 1))(q, r)
    want = jax.grad(lambda a, b: jnp.sum(jnp.tanh(a @ b.T) * w), (0, 1))(q, r)
    for g, h in zip(got, want, strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-12)


def _labels(batch, seed):
    # Classes of 1 to 6 samples (singletons included), shuffled.
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, size=batch)
    labels = np.repeat(np.arange(batch), sizes)[:batch]
    return jnp.asarray(rng.permutation(labels).astype(np.int32))


@pytest.mark.parametrize(
    "loss",
    [
        C.ContrastiveLoss(),
        C.ContrastiveLoss(pos_margin=0.3, neg_margin=1.2, reducer=C.MeanReducer()),
        C.ContrastiveLoss(distance=C.CosineSimilarity(), reducer=C.SumReducer()),
        C.ContrastiveLoss(
            distance=C.LpDistance(power=2), reducer=C.ThresholdReducer(low=0.1, high=1.5)
        ),
    ],
    ids=["default", "mean", "cosine-sum", "squared-threshold"],
)
def test_upper_block_triangle_equals_the_whole_matrix(loss, monkeypatch):
    # An elementwise pair loss over all pairs at B = 600 takes the upper-block-triangle path
    # (blocks of 256, a ragged last block of 88). It must equal the whole-matrix evaluation in
    # value and gradient: float64, duplicate rows included, rounding only (1e-10).
    from calibrax.metric_learning.losses import _pair_base

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(600, 8)))
    x = x.at[10].set(x[300]).at[599].set(x[0])
    labels = _labels(600, 3)
    labels = labels.at[10].set(labels[300])
    assert _pair_base.pair_block_size(600) == 256
    blocked = jax.value_and_grad(lambda e: loss(e, labels))(x)
    monkeypatch.setattr(_pair_base, "pair_block_size", lambda batch: batch)
    whole = jax.value_and_grad(lambda e: loss(e, labels))(x)
    np.testing.assert_allclose(blocked[0], whole[0], rtol=1e-10)
    np.testing.assert_allclose(blocked[1], whole[1], rtol=1e-10, atol=1e-12)
    assert float(whole[0]) > 0


def test_upper_block_path_under_jit_and_in_float32():
    # The blocked path jits, and in float32 agrees with float64 to float32 rounding (1e-5).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(520, 16))
    labels = _labels(520, 4)
    loss = C.ContrastiveLoss()
    v32, g32 = jax.jit(jax.value_and_grad(lambda e, l: loss(e, l)))(
        jnp.asarray(x, jnp.float32), labels
    )
    v64, g64 = jax.value_and_grad(lambda e: loss(e, labels))(jnp.asarray(x))
    assert v32.dtype == jnp.float32
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("batch", [7, 40])
@pytest.mark.parametrize(
    "loss",
    [
        C.SupConLoss(),
        C.SupConLoss(temperature=0.5, distance=C.LpDistance(), reducer=C.MeanReducer()),
        C.SupConLoss(temperature=0.02, distance=C.DotProductSimilarity()),
    ],
    ids=["default", "lp-mean", "dot-small-temperature"],
)
def test_supcon_written_out_backward_matches_autodiff(loss, batch):
    # SupCon over all pairs: the written-out backward pass on the symmetric matrix must equal
    # autodiff of the row-wise formulation (pair_terms along rows, through the plain distance
    # matrix). float64; singleton classes (anchors without a positive) and a duplicated row
    # included; rounding only, 1e-10.
    from calibrax.metric_learning.losses._pair_base import GenericPairLoss

    rng = np.random.default_rng(batch)
    x = jnp.asarray(rng.normal(size=(batch, 6))).at[1].set(0.5).at[2].set(0.5)
    labels = _labels(batch, batch)
    reducer = loss.reducer if loss.reducer is not None else loss.default_reducer()

    def rowwise(e):
        mat, pos, neg = GenericPairLoss.pairs(loss, e, labels, None)
        term = loss.pair_terms(mat, pos, neg, axis=1)["loss"]
        return reducer(term.values, term.weights)

    fast = jax.value_and_grad(lambda e: loss(e, labels))(x)
    plain = jax.value_and_grad(rowwise)(x)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-10)
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-10, atol=1e-12)
    assert float(plain[0]) > 0


_NPAIRS = C.NPairsLoss()
# Every case has the same shapes, so one compilation of the bucketed loss serves them all (it is
# traced before any case patches the widths: the first call below comes before the patch).
_npairs_bucketed = jax.jit(jax.value_and_grad(lambda e, l: _NPAIRS(e, l)))


@pytest.mark.parametrize("n_classes_with_pairs", [0, 1, 31, 32, 33, 100, 150])
def test_npairs_width_buckets_give_the_full_width_values(n_classes_with_pairs, monkeypatch):
    # NPairs over all pairs picks the narrowest logits width that holds every selected pair.
    # Each bucket must give the values and gradients of the full width (B // 2 = 150), float64,
    # 1e-12: the padding is masked out exactly.
    from calibrax.metric_learning.losses import n_pairs

    batch = 300
    rng = np.random.default_rng(n_classes_with_pairs)
    paired = np.repeat(np.arange(n_classes_with_pairs), 2)
    singles = np.arange(1000, 1000 + batch - paired.size)
    labels = jnp.asarray(rng.permutation(np.concatenate([paired, singles])).astype(np.int32))
    x = jnp.asarray(rng.normal(size=(batch, 5)))
    assert n_pairs._bucket_widths(150) == (32, 64, 128, 150)
    bucketed = _npairs_bucketed(x, labels)
    monkeypatch.setattr(n_pairs, "_bucket_widths", lambda size: (size,))
    # Eager, so traced again under the patch in every case.
    full = jax.value_and_grad(lambda e: _NPAIRS(e, labels))(x)
    np.testing.assert_allclose(bucketed[0], full[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bucketed[1], full[1], rtol=1e-12, atol=1e-15)
    assert (float(full[0]) > 0) == (n_classes_with_pairs > 1)


@pytest.mark.parametrize("gamma", [0.1, 0.001])
def test_soft_triple_closed_form_backward_matches_autodiff(gamma):
    # SoftTripleLoss's custom VJP (centres regrouped, 1/gamma folded in, exp unshifted for
    # gamma = 0.1, shifted by the max for gamma = 0.001: 1/gamma over float64's 600) against
    # autodiff of the plain formula (class_similarities + cross-entropy), float64: rounding
    # only (1e-10).
    from flax import nnx

    from calibrax.metric_learning.losses._weight_losses import cross_entropy

    loss = C.SoftTripleLoss(
        3, 5, centers_per_class=4, gamma=gamma, param_dtype=jnp.float64, rngs=nnx.Rngs(1)
    )
    labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    graphdef, state = nnx.split(loss)

    def fast(state, x):
        return nnx.merge(graphdef, state)(x, labels)

    def plain(state, x):
        module = nnx.merge(graphdef, state)
        sim = module.class_similarities(x)
        target = jax.nn.one_hot(labels, 3, dtype=sim.dtype)
        return jnp.mean(cross_entropy(module.la * (sim - module.margin * target), labels))

    got = jax.value_and_grad(fast, argnums=(0, 1))(state, X)
    want = jax.value_and_grad(plain, argnums=(0, 1))(state, X)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("blocks", [None, 3])
@pytest.mark.parametrize("gamma", [8.0, 800.0])
def test_instance_loss_one_matmul_backward_matches_autodiff(gamma, blocks):
    # InstanceLoss's custom VJPs ((A + A^T) x with the transposed softmax taken from the logits'
    # symmetry; with blocks=3, the upper-block Gram of _instance_values_blocked) against autodiff
    # of the plain formula, float64, repeated labels and a zero embedding: rounding only. gamma
    # 8 takes the exp(logit - gamma) path, 800 the row maxima (never blocked).
    from calibrax.metric_learning.losses._weight_losses import cross_entropy
    from calibrax.metric_learning.losses.instance import dense_rank

    labels = jnp.array([3, 1, 3, 0, 1, 7, 0, 3, 5])
    loss = C.InstanceLoss(gamma=gamma)
    loss._blocks = blocks
    x = X.at[3].set(0.0)

    def plain(x):
        logits = C.CosineSimilarity()(x) * gamma
        return jnp.mean(cross_entropy(logits, dense_rank(labels)))

    got = jax.value_and_grad(lambda x: loss(x, labels))(x)
    want = jax.value_and_grad(plain)(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("distance", [None, C.CosineSimilarity()])
@pytest.mark.parametrize("scale", [2.0, 400.0])
def test_nca_symmetric_backward_matches_the_general_path(distance, scale):
    # NCALoss on the batch itself goes through _nca_self_values (symmetrised cotangent, one
    # backward matmul): values and gradients against autodiff of the plain formula written out
    # here (float64, rounding only; labels 7 and 5 have no positive). Scale 2 takes the
    # constant-shift softmax, 400 (a logit range over float64's 600) the row maxima.
    labels = jnp.array([3, 1, 3, 0, 1, 7, 0, 3, 5])
    loss = C.NCALoss(softmax_scale=scale, distance=distance)
    dist = loss.distance

    def plain(x):
        mat = dist(x)
        logits = scale * (mat if dist.is_inverted else -mat)
        eye = jnp.eye(9, dtype=bool)
        logits = jnp.where(eye, -jnp.inf, logits)
        positive = (labels[:, None] == labels[None, :]) & ~eye
        log_p = jax.nn.log_softmax(logits, axis=1)
        log_pos = jax.nn.logsumexp(jnp.where(positive, log_p, -1e300), axis=1)
        has = jnp.any(positive, axis=1)
        return jnp.sum(jnp.where(has, -log_pos, 0)) / jnp.sum(has.astype(x.dtype))

    got = jax.value_and_grad(lambda x: loss(x, labels))(X)
    want = jax.value_and_grad(plain)(X)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["LargeMarginSoftmaxLoss", "SphereFaceLoss"])
@pytest.mark.parametrize(("margin", "tiny_column"), [(3, False), (4, False), (4, True)])
def test_margin_softmax_closed_form_backward_matches_autodiff(name, margin, tiny_column):
    # The custom VJP of L-Softmax / SphereFace against autodiff of the plain formula (one-hot
    # replacement of the target cosine, then the norms), float64, a zero embedding included
    # (the norms' gradient is 0 there on both paths): rounding only.
    import math

    from flax import nnx

    from calibrax.metric_learning.losses._weight_losses import cross_entropy
    from calibrax.metric_learning.losses._weight_losses import l2_normalize
    from calibrax.metric_learning.losses.large_margin_softmax import cos_multiple_angle
    from calibrax.metric_learning.losses.large_margin_softmax import row_norm

    # Row 5 and column 3 have norms below the 1e-12 clamp of the normalisation (the off-target
    # logits then depend on the norm, a branch of the hand-written backward of its own).
    x = X.at[2].set(0.0).at[5].multiply(1e-13)
    labels = jnp.array([0, 1, 2, 3, 0, 1, 2, 3, 0])
    loss = getattr(C, name)(
        4, 5, margin=margin, scale=1.5, param_dtype=jnp.float64, rngs=nnx.Rngs(2)
    )
    if tiny_column:
        loss.W[...] = loss.W[...].at[:, 3].multiply(1e-13)
    graphdef, state = nnx.split(loss)

    def plain(state, x):
        w = nnx.merge(graphdef, state).W[...]
        cosine = l2_normalize(x, axis=1) @ l2_normalize(w, axis=0)
        target = jnp.take_along_axis(cosine, labels[:, None], axis=1)[:, 0]
        k = jnp.floor(
            jnp.arccos(jnp.clip(jax.lax.stop_gradient(target), -1, 1)) / (math.pi / margin)
        )
        sign = jnp.where(jnp.mod(k, 2) == 0, 1.0, -1.0)
        modified = sign * cos_multiple_angle(target, margin) - 2 * k
        logits = cosine + jax.nn.one_hot(labels, 4, dtype=x.dtype) * (modified - target)[:, None]
        logits = logits * row_norm(x)[:, None] * 1.5
        if name == "LargeMarginSoftmaxLoss":
            logits = logits * row_norm(w, axis=0)[None, :]
        return jnp.mean(cross_entropy(logits, labels))

    got = jax.value_and_grad(lambda s, x: nnx.merge(graphdef, s)(x, labels), argnums=(0, 1))(
        state, x
    )
    want = jax.value_and_grad(plain, argnums=(0, 1))(state, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", ["direct", "gram"])
def test_p2s_grad_closed_form_backward_matches_autodiff(form):
    # P2SGradLoss's custom VJPs (both forms, see P2SGradLoss) against autodiff of the plain
    # formula (torch's clamp: gradient on [-1, 1], none outside), float64, one embedding
    # parallel to its class column (a cosine just below 1): rounding only.
    from flax import nnx

    from calibrax.metric_learning.losses.p2s_grad import unit_columns

    loss = C.P2SGradLoss(5, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(3))
    loss._form = form
    labels = jnp.array([0, 1, 2, 3, 0, 1, 2, 3, 0])
    x = X.at[4].set(3.0 * loss.weight[...][:, 0])
    graphdef, state = nnx.split(loss)

    def plain(state, x):
        w = nnx.merge(graphdef, state).weight[...]
        used = w + jax.lax.stop_gradient(unit_columns(w) - w)
        cosine = (x @ used) / jnp.sqrt(jnp.sum(x * x, axis=1))[:, None]
        inside = (cosine >= -1) & (cosine <= 1)
        cosine = jnp.where(inside, cosine, jnp.clip(jax.lax.stop_gradient(cosine), -1, 1))
        return jnp.mean(jnp.square(cosine - jax.nn.one_hot(labels, 4, dtype=x.dtype)))

    got = jax.value_and_grad(lambda s, x: nnx.merge(graphdef, s)(x, labels), argnums=(0, 1))(
        state, x
    )
    want = jax.value_and_grad(plain, argnums=(0, 1))(state, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rows", [1024, 1030])
def test_symmetric_gram_from_upper_blocks_is_the_product(rows):
    # From 1024 rows x @ x.T is assembled from the 10 upper blocks of a 4 x 4 split (1030: uneven
    # blocks of 258, 258, 258, 256): the same dot products (float64, 1e-12 relative to the
    # largest entry) and exactly symmetric.
    from calibrax.metric_learning.distances.base_distance import symmetric_gram

    x = jax.random.normal(jax.random.key(5), (rows, 6), jnp.float64)
    got = np.asarray(jax.jit(symmetric_gram)(x))
    want = np.asarray(x) @ np.asarray(x).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    np.testing.assert_array_equal(got, got.T)


def test_nca_on_a_batch_past_the_blocked_gram_matches_pml():
    # NCALoss at 1030 rows goes through the blocked Gram product of the squared distances
    # (symmetric_gram) and its one-matmul backward pass: values and gradients against PML 2.9,
    # float64, 1e-6 relative (the bound; measured ~1e-14).
    import torch
    from pytorch_metric_learning import losses as pml

    rng = np.random.default_rng(8)
    emb = rng.normal(size=(1030, 8))
    emb[9] = emb[4]
    lab = rng.integers(0, 200, size=1030)
    value, grad = jax.jit(jax.value_and_grad(lambda e, l: C.NCALoss()(e, l)))(
        jnp.asarray(emb), jnp.asarray(lab, jnp.int32)
    )
    e = torch.tensor(emb, requires_grad=True)
    want = pml.NCALoss()(e, torch.tensor(lab))
    want.backward()
    np.testing.assert_allclose(float(value), float(want), rtol=1e-6)
    scale = float(e.grad.abs().max())
    np.testing.assert_allclose(np.asarray(grad), e.grad.numpy(), rtol=1e-6, atol=1e-9 * scale)
