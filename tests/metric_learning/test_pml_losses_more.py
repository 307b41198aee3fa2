"""Behaviour shared by the losses added for PML 2.9's full surface (SNR contrastive, tuplet margin,
VICReg, Smooth-AP, ranked list, TCM, dynamic soft margin, PNP, manifold): registry and protocol,
the call signature's errors, NaN under jit, half precision."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import calibrax.metric_learning as C
from calibrax.core import MetricLearningProtocol
from calibrax.core.registry import get_entry

EMB = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
LABELS = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)

# name -> (factory, call(loss, embeddings)): every loss on the same batch.
LOSSES = {
    "signal_to_noise_ratio_contrastive_loss": (
        C.SignalToNoiseRatioContrastiveLoss,
        lambda f, e: f(e, LABELS),
    ),
    "tuplet_margin_loss": (C.TupletMarginLoss, lambda f, e: f(e, LABELS)),
    "vicreg_loss": (C.VICRegLoss, lambda f, e: f(e, ref_emb=e[::-1] * 0.5)),
    "smooth_ap_loss": (C.SmoothAPLoss, lambda f, e: f(e, LABELS)),
    "ranked_list_loss": (lambda: C.RankedListLoss(margin=0.4, Tn=1.0), lambda f, e: f(e, LABELS)),
    "threshold_consistent_margin_loss": (
        C.ThresholdConsistentMarginLoss,
        lambda f, e: f(e, LABELS),
    ),
    "dynamic_soft_margin_loss": (C.DynamicSoftMarginLoss, lambda f, e: f(e, LABELS)),
    "pnp_loss": (C.PNPLoss, lambda f, e: f(e, LABELS)),
    "manifold_loss": (
        lambda: C.ManifoldLoss(4, K=3, rngs=nnx.Rngs(0)),
        lambda f, e: f(e, indices_tuple=LABELS % 3),
    ),
}
NAMES = sorted(LOSSES)


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_protocol(name):
    make, _ = LOSSES[name]
    loss = make()
    assert isinstance(loss, MetricLearningProtocol)
    entry = get_entry(name)
    assert entry.obj is type(loss)
    assert (entry.tier, entry.kind, entry.domain) == (3, "loss", "metric_learning")
    assert entry.differentiable and entry.jit_compatible and entry.higher_is_better is False
    assert type(loss).__name__ in C.__all__


@pytest.mark.parametrize("name", NAMES)
def test_nan_under_jit_is_nan_and_eager_raises(name):
    make, call = LOSSES[name]
    bad = EMB.at[3, 2].set(jnp.nan)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `embeddings` to be finite, got 1 NaN and 0 Inf values"),
    ):
        call(make(), bad)
    assert np.isnan(float(jax.jit(lambda e: call(make(), e))(bad)))


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_is_finite(name):
    make, call = LOSSES[name]

    def value_and_grad(e):
        return jax.jit(jax.value_and_grad(lambda x: call(make(), x)))(e)

    # Exponentials of scaled similarities (tuplet: 64 cos) overflow float16 unless the loss
    # works in float32, which each does, returning float16.
    value, grad = value_and_grad((3 * EMB).astype(jnp.float16))
    assert value.dtype == jnp.float16 and grad.dtype == jnp.float16
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_call_signature_errors():
    tcm, smooth_ap = C.ThresholdConsistentMarginLoss(), C.SmoothAPLoss()
    with pytest.raises(
        ValueError, match=re.escape("expected `labels` (SmoothAPLoss needs class labels), got None")
    ):
        smooth_ap(EMB)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `ref_emb` and `ref_labels` to be None (SmoothAPLoss compares the batch "
            "with itself), got `ref_emb`"
        ),
    ):
        smooth_ap(EMB, LABELS, ref_emb=EMB, ref_labels=LABELS)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `labels` and `ref_labels` to be None (VICRegLoss does not use labels), "
            "got `labels`"
        ),
    ):
        C.VICRegLoss()(EMB, LABELS)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `indices_tuple` to be None (PNPLoss does not take mined tuples), got PairMask"
        ),
    ):
        C.PNPLoss()(EMB, LABELS, C.PairMask(pos=jnp.zeros((8, 8)), neg=jnp.zeros((8, 8))))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `ref_emb` to have embedding size 4 on axis 1, got shape (8, 3)"),
    ):
        tcm(EMB, LABELS, ref_emb=EMB[:, :3], ref_labels=LABELS)
    with pytest.raises(
        ValueError, match=re.escape("expected `ref_emb` with `ref_labels`, got `ref_labels` alone")
    ):
        tcm(EMB, LABELS, ref_labels=LABELS)
    with pytest.raises(
        ValueError, match=re.escape("expected `ref_labels` with `ref_emb` and `labels`, got None")
    ):
        tcm(EMB, LABELS, ref_emb=EMB)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `ref_emb` and `ref_labels` to have the same length, got 8 and 5"),
    ):
        tcm(EMB, LABELS, ref_emb=EMB, ref_labels=LABELS[:5])
    with pytest.raises(
        TypeError, match=re.escape("expected `ref_labels` to have an integer dtype, got float32")
    ):
        tcm(EMB, LABELS, ref_emb=EMB, ref_labels=LABELS.astype(jnp.float32))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `ref_emb` to be finite, got 0 NaN and 1 Inf values"),
    ):
        tcm(EMB, LABELS, ref_emb=EMB.at[0, 0].set(jnp.inf), ref_labels=LABELS)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `indices_tuple` to be None when `ref_emb` is given"),
    ):
        tcm(EMB, LABELS, C.PairMask(pos=jnp.zeros((8, 8)), neg=jnp.zeros((8, 8))), EMB, LABELS)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `indices_tuple` to be a miner output (PairMask or TripletMask) or None, "
            "got tuple"
        ),
    ):
        tcm(EMB, LABELS, (1, 2))
    with pytest.raises(
        ValueError, match=re.escape("expected `embeddings` to be non-empty, got shape (0, 4)")
    ):
        tcm(EMB[:0], LABELS[:0])
    with pytest.raises(
        TypeError, match=re.escape("expected `embeddings` to have a floating dtype, got int32")
    ):
        C.VICRegLoss()(EMB.astype(jnp.int32))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `embeddings` and `ref_emb` to have the same shape, got"),
    ):
        C.VICRegLoss()(EMB, ref_emb=EMB[:5])
    with pytest.raises(
        ValueError, match=re.escape("expected `embeddings` to have at least 2 samples, got 1")
    ):
        C.VICRegLoss()(EMB[:1])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `indices_tuple` only with `labels` and without `ref_emb` "
            "(DynamicSoftMarginLoss), got PairMask"
        ),
    ):
        C.DynamicSoftMarginLoss()(
            EMB, None, C.PairMask(pos=jnp.zeros((8, 8)), neg=jnp.zeros((8, 8)))
        )


def test_ranked_list_with_similarities_and_reducers_runs_jitted():
    # Any distance and reducer compose (PML applies the formula to the matrix as it is).
    loss = C.RankedListLoss(
        margin=0.2, Tn=1.0, distance=C.CosineSimilarity(), reducer=C.ThresholdReducer(low=0.0)
    )
    value = jax.jit(lambda e: loss(e, LABELS))(EMB)
    assert np.isfinite(float(value))
