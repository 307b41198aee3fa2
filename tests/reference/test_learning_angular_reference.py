"""Parity of calibrax.metric_learning.AngularLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import numpy as np
import pytest
from _pml_parity import ours_value_and_grad_fn
from _pml_parity import pml_value_and_grad
from _pml_strict import assert_close
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C
from calibrax.metric_learning.losses import angular as angular_module


@pytest.fixture(params=["slot loop", "matmul"])
def form(request, monkeypatch):
    """Each parity test runs through both forms of the pair sums: one positive slot at a time
    (what these small batches take by default: row products of the shifted exponentials for all
    pairs of the batch with itself, the general slot loop with a miner) and the matrix product
    (what anchors with many positives take), by moving the threshold between them."""
    threshold = 0 if request.param == "matmul" else 10**9
    monkeypatch.setattr(angular_module, "_matmul_from", lambda n_ref: threshold)
    return request.param


def test_angular_defaults_match_pml(form):
    values = assert_strict_parity(C.AngularLoss(), L.AngularLoss())
    # The degenerate batches are exactly 0 on both sides; the others are not.
    assert values["one_class"] == values["all_singletons"] == 0.0
    assert values["mixed"] > 0 and values["one_pair"] > 0


def test_angular_alpha_with_miner_matches_pml(form):
    # Mined triplets become pairs counted once per triplet, as PML's convert_to_pairs.
    assert_strict_parity(
        C.AngularLoss(alpha=25),
        L.AngularLoss(alpha=25),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )


def test_angular_large_norms_match_pml(form):
    # Raw embeddings of norm ~1e3: terms of e^(thousands); each pair takes its own shift, as
    # PML's logsumexp, so the values stay PML's. The matmul form underflows for some of these
    # pairs (checked below), which then go through the slot loop.
    rng = np.random.default_rng(4)
    emb = 1000 * rng.normal(size=(12, 5))
    lab = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])
    if form == "matmul":
        import jax.numpy as jnp

        loss = C.AngularLoss()
        x = jnp.asarray(emb)
        xn = loss.distance.normalize(x)
        cos = xn @ xn.T
        c1 = 4 * np.tan(np.radians(40.0)) ** 2
        a = c1 * cos * loss.distance.norm(x)[None, :]
        keep = jnp.asarray(lab[:, None] != lab[None, :])
        _, safe = angular_module._fast_losses(a, a, cos, keep, keep, 2 * (1 + c1 / 4))
        pos = (lab[:, None] == lab[None, :]) & ~np.eye(12, dtype=bool)
        assert np.any(pos & ~np.asarray(safe)) and np.any(pos & np.asarray(safe))
    run = ours_value_and_grad_fn(C.AngularLoss())
    assert_close(run(emb, lab), pml_value_and_grad(L.AngularLoss(), emb, lab), "large norms")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 90}, "expected `alpha` to be in (0, 90) degrees, got 90"),
        ({"alpha": "40"}, "expected `alpha` to be in (0, 90) degrees, got '40'"),
        (
            {"distance": C.CosineSimilarity()},
            "expected `distance` to be LpDistance(normalize_embeddings=True, p=2, power=1), "
            "got CosineSimilarity(normalize_embeddings=True, p=2, power=1)",
        ),
    ],
)
def test_angular_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        C.AngularLoss(**kwargs)


def test_both_forms_agree_with_a_reference_set_and_many_positives(monkeypatch):
    # Two classes in 40 rows against a 30-row reference set: values and the gradients w.r.t.
    # both the embeddings and the reference embeddings, slot loop against matmul form, float64
    # (1e-10: the same sums in another order).
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    emb, ref = jnp.asarray(rng.normal(size=(40, 6))), jnp.asarray(rng.normal(size=(30, 6)))
    lab, ref_lab = jnp.asarray(np.arange(40) % 2), jnp.asarray(np.arange(30) % 3)
    loss = C.AngularLoss()
    results = {}
    for threshold in (0, 10**9):
        monkeypatch.setattr(angular_module, "_matmul_from", lambda n_ref, t=threshold: t)
        f = jax.jit(
            jax.value_and_grad(
                lambda e, r: loss(e, lab, ref_emb=r, ref_labels=ref_lab), argnums=(0, 1)
            )
        )
        results[threshold] = f(emb, ref)
    (v0, (ge0, gr0)), (v1, (ge1, gr1)) = results[0], results[10**9]
    assert float(v0) > 0
    np.testing.assert_allclose(float(v0), float(v1), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(ge0), np.asarray(ge1), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(gr0), np.asarray(gr1), rtol=1e-10, atol=1e-14)


def test_default_threshold_between_the_forms():
    # The matmul form takes over above max(32, B / 24) positives for some anchor.
    assert angular_module._matmul_from(256) == 32
    assert angular_module._matmul_from(1024) == 42
    assert angular_module._matmul_from(4096) == 170


def _self_pair_split(emb: np.ndarray, lab: np.ndarray) -> tuple[int, int]:
    """(counted pairs whose product of shifted exponentials underflows, the others) of the batch
    with itself, float64: the first go through the exact per-pair evaluation."""
    import jax.numpy as jnp

    x = jnp.asarray(emb)
    r = jnp.linalg.norm(x, axis=1)
    tan_sq = np.tan(np.radians(40.0)) ** 2
    pairs = angular_module._SelfPairs(
        (x / r[:, None]) @ (x / r[:, None]).T, r, jnp.asarray(lab), 4 * tan_sq, 2 * (1 + tan_sq)
    )
    totals = np.asarray(pairs.e @ pairs.e.T)
    counted = (lab[:, None] == lab[None, :]) & ~np.eye(len(lab), dtype=bool)
    slow = counted & ~(totals > pairs.exact_from)
    return int(slow.sum()), int((counted & ~slow).sum())


def test_self_pairs_with_underflow_match_pml(form):
    # All pairs of the batch with itself, 200 rows (two blocks of 128 rows, the second moved
    # back to overlap the first), a tenth of them of norm ~300: their products of shifted
    # exponentials underflow for some pairs (checked), which are evaluated exactly, with their
    # own shift, in the forward and the backward pass. Float64, 1e-6 relative as PML.
    rng = np.random.default_rng(21)
    emb = rng.normal(size=(200, 8))
    emb[rng.permutation(200)[:20]] *= 300
    lab = rng.permutation(np.arange(200) // 4)
    slow, fast = _self_pair_split(emb, lab)
    assert slow > 0 and fast > 0
    run = ours_value_and_grad_fn(C.AngularLoss())
    assert_close(run(emb, lab), pml_value_and_grad(L.AngularLoss(), emb, lab), "underflow")


def test_self_pairs_float32_match_pml(form):
    # Float32 on both sides against PML's float64 (the exact value): the loss to 1e-6 relative;
    # each gradient entry to 3e-6 of the largest (PML's own float32 gradient is off by up to
    # ~5e-7 of it here, ours by up to ~7e-7: rounding of the cosine matrix and of the sums).
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(96, 16))
    lab = rng.permutation(np.arange(96) // 4)
    truth_value, truth_grad = pml_value_and_grad(L.AngularLoss(), emb, lab)
    loss = C.AngularLoss()
    value, grad = jax.jit(jax.value_and_grad(lambda x, l: loss(x, l)))(
        jnp.asarray(emb, jnp.float32), jnp.asarray(lab, jnp.int32)
    )
    assert value.dtype == jnp.float32
    scale = np.abs(truth_grad).max()
    np.testing.assert_allclose(float(value), truth_value, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad, np.float64), truth_grad, rtol=0, atol=3e-6 * scale)
    # PML's float32 gradient meets the same bound.
    e = torch.tensor(emb, dtype=torch.float32, requires_grad=True)
    L.AngularLoss()(e, torch.tensor(lab)).backward()
    np.testing.assert_allclose(e.grad.numpy().astype(np.float64), truth_grad, atol=3e-6 * scale)


def test_index_tuple_positive_with_another_label_matches_pml(form):
    # A PML-style (a1, p, a2, n) tuple may pair rows of different labels as "positives": the
    # pair's negatives are the anchor's (PML's keep_mask), which the matrix product over shared
    # negatives does not give, so such pairs go through the slot loop in both forms. Float64,
    # values and gradients, 1e-6 relative (the matrix product alone was off by 1e-2).
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 5))
    lab = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])
    tuples = [np.array([0, 3, 0]), np.array([1, 0, 6]), np.array([0, 3]), np.array([3, 0])]
    e = torch.tensor(emb, requires_grad=True)
    theirs = L.AngularLoss()(e, torch.tensor(lab), tuple(torch.tensor(t) for t in tuples))
    theirs.backward()
    loss = C.AngularLoss()
    value, grad = jax.jit(jax.value_and_grad(lambda x, l, t: loss(x, l, t)))(
        jnp.asarray(emb), jnp.asarray(lab, jnp.int32), tuple(jnp.asarray(t) for t in tuples)
    )
    assert_close(
        (float(value), np.asarray(grad)), (float(theirs.detach()), e.grad.numpy()), "cross-label"
    )
