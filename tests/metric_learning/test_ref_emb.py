"""``ref_emb`` / ``ref_labels`` and padded index tuples: parity with pytorch-metric-learning 2.9.

Every loss that accepts a reference set in pytorch-metric-learning is compared with it in float64:
the value and the gradients with respect to both ``embeddings`` and ``ref_emb``, to 1e-6 relative
(the issue's tolerance; the two implementations agree to ~1e-12 in float64, the atol only covers
exact zeros on one side against ~1e-17 on the other). Several seeds, two (batch, reference)
shapes, and the degenerate batches: one class, all classes distinct (no positive pair), the
reference set equal to the batch (then ``(i, i)`` *is* a positive pair, as in
pytorch-metric-learning when ``ref_labels`` is another tensor than ``labels``).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

RTOL, ATOL = 1e-6, 1e-12

LOSSES = {
    "contrastive": (lambda: C.ContrastiveLoss(), lambda: L.ContrastiveLoss()),
    "contrastive_cosine": (
        lambda: C.ContrastiveLoss(pos_margin=0.8, neg_margin=0.3, distance=C.CosineSimilarity()),
        lambda: L.ContrastiveLoss(pos_margin=0.8, neg_margin=0.3, distance=D.CosineSimilarity()),
    ),
    "triplet": (lambda: C.TripletMarginLoss(margin=0.3), lambda: L.TripletMarginLoss(margin=0.3)),
    "triplet_smooth": (
        lambda: C.TripletMarginLoss(smooth_loss=True),
        lambda: L.TripletMarginLoss(smooth_loss=True),
    ),
    "ntxent": (lambda: C.NTXentLoss(temperature=0.2), lambda: L.NTXentLoss(temperature=0.2)),
    "supcon": (lambda: C.SupConLoss(), lambda: L.SupConLoss()),
    "multi_similarity": (lambda: C.MultiSimilarityLoss(), lambda: L.MultiSimilarityLoss()),
    "circle": (lambda: C.CircleLoss(gamma=20.0), lambda: L.CircleLoss(gamma=20.0)),
    "lifted": (lambda: C.LiftedStructureLoss(), lambda: L.LiftedStructureLoss()),
    "generalized_lifted": (
        lambda: C.GeneralizedLiftedStructureLoss(),
        lambda: L.GeneralizedLiftedStructureLoss(),
    ),
    "margin": (
        lambda: C.MarginLoss(margin=0.1, beta=0.9),
        lambda: L.MarginLoss(margin=0.1, beta=0.9),
    ),
}
NAMES = sorted(LOSSES)

SHAPES = [(6, 9), (9, 5)]


def _cases(batch: int, ref: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Named (embeddings, labels, ref_emb, ref_labels) of one shape."""
    out = {}
    for seed in (0, 1):
        rng = np.random.default_rng(100 * batch + 10 * ref + seed)
        out[f"mixed_seed{seed}"] = (
            rng.normal(size=(batch, 5)),
            rng.integers(0, 3, batch),
            rng.normal(size=(ref, 5)),
            rng.integers(0, 3, ref),
        )
    rng = np.random.default_rng(7)
    emb, ref_emb = rng.normal(size=(batch, 5)), rng.normal(size=(ref, 5))
    out["one_class"] = (emb, np.full(batch, 4), ref_emb, np.full(ref, 4))
    out["no_positive"] = (emb, np.arange(batch), ref_emb, np.arange(batch, batch + ref))
    # The reference is the batch itself, passed as ref_emb (duplicates at distance 0).
    labels = rng.integers(0, 2, batch)
    out["ref_is_batch"] = (emb, labels, emb[: min(batch, ref)].copy(), labels[: min(batch, ref)])
    return out


def _pml(loss, emb, lab, ref, ref_lab, indices=None):
    e = torch.tensor(emb, requires_grad=True)
    r = torch.tensor(ref, requires_grad=True)
    value = loss(e, torch.tensor(lab), indices, r, torch.tensor(ref_lab))
    grads = [np.zeros_like(emb), np.zeros_like(ref)]
    if value.requires_grad:
        value.backward()
        grads = [
            np.zeros_like(x) if t.grad is None else t.grad.numpy() for x, t in ((emb, e), (ref, r))
        ]
    return float(value.detach()), grads


def _ours_fn(loss):
    def f(emb, lab, ref, ref_lab, indices):
        return loss(emb, lab, indices, ref, ref_lab)

    return jax.jit(jax.value_and_grad(f, argnums=(0, 2)))


def _check(ours, theirs, args, indices=None, pml_indices=None, msg=""):
    emb, lab, ref, ref_lab = args
    v1, (g1, h1) = ours(
        jnp.asarray(emb),
        jnp.asarray(lab, jnp.int32),
        jnp.asarray(ref),
        jnp.asarray(ref_lab, jnp.int32),
        indices,
    )
    v2, (g2, h2) = _pml(theirs, emb, lab, ref, ref_lab, pml_indices)
    np.testing.assert_allclose(float(v1), v2, rtol=RTOL, atol=ATOL, err_msg=msg)
    np.testing.assert_allclose(np.asarray(g1), g2, rtol=RTOL, atol=ATOL, err_msg=msg)
    np.testing.assert_allclose(np.asarray(h1), h2, rtol=RTOL, atol=ATOL, err_msg=msg)


@pytest.mark.parametrize("name", NAMES)
def test_ref_emb_matches_pml(name):
    make_ours, make_theirs = LOSSES[name]
    ours = _ours_fn(make_ours())
    for shape in SHAPES:
        for case, args in _cases(*shape).items():
            _check(ours, make_theirs(), args, msg=f"{name} {shape} {case}")


def _padded(arrays, size):
    return tuple(
        jnp.asarray(np.concatenate([a, np.full(size - len(a), -1)]), jnp.int32) for a in arrays
    )


@pytest.mark.parametrize("name", NAMES)
def test_padded_index_tuples_with_ref_match_pml(name):
    # PML-style (a1, p, a2, n) and (a, p, n) tuples between the batch and the reference set,
    # with duplicates, padded with -1 to a fixed 40 entries (one compilation for both cases).
    make_ours, make_theirs = LOSSES[name]
    ours = _ours_fn(make_ours())
    emb, lab, ref, ref_lab = _cases(6, 9)["mixed_seed0"]
    rng = np.random.default_rng(3)
    # Label-consistent pairs and triplets, as a miner would give (pytorch-metric-learning's
    # mask-based losses refuse a pair that is both positive and negative), with repeats.
    same = lab[:, None] == ref_lab[None, :]
    pos_a, pos_p = np.nonzero(same)
    neg_a, neg_n = np.nonzero(~same)
    pi = rng.integers(0, len(pos_a), 12)
    ni = rng.integers(0, len(neg_a), 18)
    pairs = (pos_a[pi], pos_p[pi], neg_a[ni], neg_n[ni])
    a = pos_a[pi]
    n = np.array([rng.choice(np.nonzero(~same[x])[0]) for x in a])
    triplets = (a, pos_p[pi], n)
    _check(
        ours,
        make_theirs(),
        (emb, lab, ref, ref_lab),
        _padded(pairs, 40),
        tuple(torch.tensor(x) for x in pairs),
        msg=f"{name} pairs",
    )
    _check(
        ours,
        make_theirs(),
        (emb, lab, ref, ref_lab),
        _padded(triplets, 40),
        tuple(torch.tensor(x) for x in triplets),
        msg=f"{name} triplets",
    )


MINER_PAIRS = {
    # Triplet miners feed the triplet loss, pair miners the contrastive loss (one loss per kind
    # keeps the test short; the padded-tuple test covers the conversions between kinds).
    "triplet": [
        (C.TripletMarginMiner(margin=0.4), M.TripletMarginMiner(margin=0.4)),
        (C.BatchHardMiner(), M.BatchHardMiner()),
    ],
    "contrastive": [
        (C.PairMarginMiner(), M.PairMarginMiner()),
        (C.MultiSimilarityMiner(), M.MultiSimilarityMiner()),
    ],
}


@pytest.mark.parametrize("name", sorted(MINER_PAIRS))
def test_miner_with_ref_matches_pml(name):
    make_ours, make_theirs = LOSSES[name]
    loss = make_ours()
    for our_miner, their_miner in MINER_PAIRS[name]:

        def f(emb, lab, ref, ref_lab, miner=our_miner):
            return loss(emb, lab, miner(emb, lab, ref, ref_lab), ref, ref_lab)

        ours = jax.jit(jax.value_and_grad(f, argnums=(0, 2)))
        for case, (emb, lab, ref, ref_lab) in _cases(6, 9).items():
            args = (
                jnp.asarray(emb),
                jnp.asarray(lab, jnp.int32),
                jnp.asarray(ref),
                jnp.asarray(ref_lab, jnp.int32),
            )
            v1, (g1, h1) = ours(*args)
            e, r = torch.tensor(emb), torch.tensor(ref)
            mined = their_miner(e, torch.tensor(lab), r, torch.tensor(ref_lab))
            v2, (g2, h2) = _pml(make_theirs(), emb, lab, ref, ref_lab, mined)
            msg = f"{name} {type(our_miner).__name__} {case}"
            np.testing.assert_allclose(float(v1), v2, rtol=RTOL, atol=ATOL, err_msg=msg)
            np.testing.assert_allclose(np.asarray(g1), g2, rtol=RTOL, atol=ATOL, err_msg=msg)
            np.testing.assert_allclose(np.asarray(h1), h2, rtol=RTOL, atol=ATOL, err_msg=msg)


def test_without_ref_emb_the_diagonal_is_excluded():
    # Passing the batch as ref_emb counts (i, i) as a positive pair; ref_emb=None does not.
    rng = np.random.default_rng(0)
    emb = jnp.asarray(rng.normal(size=(6, 4)))
    lab = jnp.asarray([0, 0, 1, 1, 2, 2], jnp.int32)
    loss = C.ContrastiveLoss(pos_margin=-1.0)  # every positive pair has a non-zero loss
    plain = float(loss(emb, lab))
    with_ref = float(loss(emb, lab, ref_emb=emb, ref_labels=lab))
    theirs = L.ContrastiveLoss(pos_margin=-1.0)
    e, l = torch.tensor(np.asarray(emb)), torch.tensor(np.asarray(lab))
    np.testing.assert_allclose(plain, float(theirs(e, l)), rtol=RTOL)
    np.testing.assert_allclose(with_ref, float(theirs(e, l, None, e, l.clone())), rtol=RTOL)
    assert abs(plain - with_ref) > 1e-3


UNSUPPORTED = {
    "NPairsLoss": lambda: C.NPairsLoss(),
    "ArcFaceLoss": lambda: C.ArcFaceLoss(3, 4, rngs=__import__("flax").nnx.Rngs(0)),
    "CosFaceLoss": lambda: C.CosFaceLoss(3, 4, rngs=__import__("flax").nnx.Rngs(0)),
    "SubCenterArcFaceLoss": lambda: C.SubCenterArcFaceLoss(
        3, 4, rngs=__import__("flax").nnx.Rngs(0)
    ),
    "NormalizedSoftmaxLoss": lambda: C.NormalizedSoftmaxLoss(
        3, 4, rngs=__import__("flax").nnx.Rngs(0)
    ),
    "ProxyNCALoss": lambda: C.ProxyNCALoss(3, 4, rngs=__import__("flax").nnx.Rngs(0)),
    "ProxyAnchorLoss": lambda: C.ProxyAnchorLoss(3, 4, rngs=__import__("flax").nnx.Rngs(0)),
}

EMB = jnp.asarray(np.random.default_rng(1).normal(size=(6, 4)), jnp.float32)
LAB = jnp.asarray([0, 1, 2, 0, 1, 2], jnp.int32)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_ref_emb_refused_where_pml_refuses_it(name):
    # pytorch-metric-learning's c_f.ref_not_supported: "ref_emb is not supported for this loss".
    loss = UNSUPPORTED[name]()
    with pytest.raises(ValueError, match=re.escape(f"ref_emb is not supported by {name}")):
        loss(EMB, LAB, ref_emb=EMB, ref_labels=LAB)


def test_bad_ref_inputs():
    loss = C.ContrastiveLoss()
    cases = [
        (
            dict(ref_emb=EMB[:, :3], ref_labels=LAB),
            "expected `ref_emb` to have embedding size 4 on axis 1, got shape (6, 3)",
        ),
        (
            dict(ref_emb=EMB[0], ref_labels=LAB),
            "expected `ref_emb` to have 2 dims (reference size, embedding_dim), got shape (4,)",
        ),
        (
            dict(ref_emb=EMB, ref_labels=LAB[:5]),
            "expected `ref_emb` and `ref_labels` to have the same length, got 6 and 5",
        ),
        (
            dict(ref_emb=EMB),
            "expected `ref_labels` with `ref_emb` when the pairs come from the labels "
            "(no `indices_tuple`), got None",
        ),
        (dict(ref_labels=LAB), "got `ref_labels` without `ref_emb`"),
        (
            dict(ref_emb=EMB.at[0, 0].set(jnp.inf), ref_labels=LAB),
            "expected `ref_emb` to be finite, got 0 NaN and 1 Inf values",
        ),
        (
            dict(ref_emb=EMB[:0], ref_labels=LAB[:0]),
            "expected `ref_emb` to be non-empty, got shape (0, 4)",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            loss(EMB, LAB, **kwargs)
    with pytest.raises(
        TypeError, match=re.escape("expected `ref_labels` to have an integer dtype, got float32")
    ):
        loss(EMB, LAB, ref_emb=EMB, ref_labels=LAB.astype(jnp.float32))
    with pytest.raises(
        TypeError, match=re.escape("expected `ref_emb` to have a floating dtype, got int32")
    ):
        loss(EMB, LAB, ref_emb=LAB[:, None], ref_labels=LAB)
    with pytest.raises(
        ValueError,
        match=re.escape("ContrastiveLoss needs `labels` or `indices_tuple`, got neither"),
    ):
        loss(EMB)
    with pytest.raises(ValueError, match=re.escape("swap=True is not supported with ref_emb")):
        C.TripletMarginLoss(swap=True)(EMB, LAB, ref_emb=EMB, ref_labels=LAB)
    with pytest.raises(ValueError, match=re.escape("NPairsLoss requires `labels`, got None")):
        C.NPairsLoss()(EMB, None, (LAB, LAB, LAB, LAB))


def test_bad_index_tuples():
    loss = C.ContrastiveLoss()
    idx = jnp.arange(6, dtype=jnp.int32)
    cases = [
        (
            (idx, idx),
            ValueError,
            "expected `indices_tuple` to have 4 arrays (a1, p, a2, n) or 3 arrays (a, p, n), got 2",
        ),
        (
            (idx, idx[:5], idx, idx),
            ValueError,
            "expected `indices_tuple.a1` and `indices_tuple.p` to have the same length, got 6 and 5",
        ),
        (
            (idx, idx, idx[:4]),
            ValueError,
            "expected `indices_tuple.a` and `indices_tuple.n` to have the same length, got 6 and 4",
        ),
        (
            (idx, idx.at[2].set(9), idx),
            ValueError,
            "expected `indices_tuple.p` to hold indices in [0, 6) or the padding value -1, got 9",
        ),
        (
            (idx.at[0].set(-2), idx, idx),
            ValueError,
            "expected `indices_tuple.a` to hold indices in [0, 6) or the padding value -1, got -2",
        ),
        (
            (idx[:, None], idx, idx),
            ValueError,
            "expected `indices_tuple.a` to have 1 dims (pairs or triplets), got shape (6, 1)",
        ),
        (
            (idx.astype(jnp.float32), idx, idx),
            TypeError,
            "expected `indices_tuple.a` to have an integer dtype, got float32",
        ),
        (
            "abc",
            TypeError,
            "expected `indices_tuple` to be a miner output (PairMask, TripletMask, TripletList), an (a1, p, a2, n) or (a, p, n) tuple of index arrays, or None, got str",
        ),
    ]
    for indices, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            loss(EMB, LAB, indices)
    # With a reference set, positives/negatives index it (size 9 here).
    ref = jnp.zeros((9, 4), jnp.float32)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `indices_tuple.n` to hold indices in [0, 9) or the padding value -1, got 9"
        ),
    ):
        loss(EMB, LAB, (idx, idx, idx + 4), ref, jnp.zeros(9, jnp.int32))


def test_padding_only_tuple_gives_zero_under_jit():
    # All entries padding: no pair, no triplet -> exactly 0 with zero gradients, as an empty
    # tuple in pytorch-metric-learning.
    pad = jnp.full((5,), -1, jnp.int32)
    for loss in (C.ContrastiveLoss(), C.TripletMarginLoss(), C.NTXentLoss(), C.MarginLoss()):
        f = jax.jit(jax.value_and_grad(lambda e, loss=loss: loss(e, LAB, (pad, pad, pad))))
        value, grad = f(EMB)
        assert float(value) == 0.0
        assert np.all(np.asarray(grad) == 0)


CLASS_WEIGHT = {
    "ArcFaceLoss": ("W", {}),
    "CosFaceLoss": ("W", {}),
    "SubCenterArcFaceLoss": ("W", {}),
    "NormalizedSoftmaxLoss": ("W", {}),
    "ProxyNCALoss": ("proxies", {}),
    "ProxyAnchorLoss": ("proxies", {}),
}


@pytest.mark.parametrize("name", sorted(CLASS_WEIGHT))
def test_class_weight_losses_weight_samples_by_the_indices_tuple_as_pml(name):
    # pytorch-metric-learning's convert_to_weights: each sample's loss is weighted by how often
    # it appears in the tuple, over the largest count (ProxyAnchor adds weight - 1 to the
    # exponents). A miner's triplet mask and a padded (a, p, n) tuple, float64 weights.
    from flax import nnx

    attr, _ = CLASS_WEIGHT[name]
    ours = getattr(C, name)(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    theirs = getattr(L, name)(num_classes=4, embedding_size=5)
    getattr(theirs, attr).data = torch.tensor(np.asarray(getattr(ours, attr)[...]))
    rng = np.random.default_rng(4)
    emb, lab = rng.normal(size=(10, 5)), rng.integers(0, 4, 10)
    x, y = jnp.asarray(emb), jnp.asarray(lab, jnp.int32)
    mined = C.TripletMarginMiner(margin=0.3)(x, y)
    a, p, n = mined.to_indices()
    tup = _padded((a[:7], p[:7], n[:7]), 12)
    cases = {
        "miner": (mined, tuple(torch.tensor(v) for v in (a, p, n))),
        "padded_tuple": (tup, tuple(torch.tensor(v[:7]) for v in (a, p, n))),
        "pairs": (
            _padded((a[:5], p[:5], a[5:9], n[5:9]), 12),
            tuple(torch.tensor(v) for v in (a[:5], p[:5], a[5:9], n[5:9])),
        ),
    }
    for case, (ours_idx, their_idx) in cases.items():
        value, grad = jax.value_and_grad(lambda e, i=ours_idx: ours(e, y, i))(x)
        t = torch.tensor(emb, requires_grad=True)
        expected = theirs(t, torch.tensor(lab), their_idx)
        expected.backward()
        msg = f"{name} {case}"
        np.testing.assert_allclose(float(value), float(expected.detach()), rtol=RTOL, err_msg=msg)
        np.testing.assert_allclose(
            np.asarray(grad), t.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=msg
        )
