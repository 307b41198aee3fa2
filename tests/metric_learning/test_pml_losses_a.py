"""Behaviour shared by the PML 2.9 losses added in issue 16 (Angular, FastAP, Histogram,
Instance, IntraPairVariance, LargeMarginSoftmax, SphereFace, NCA, P2SGrad, SoftTriple): registry
and protocol, exact errors for bad input, NaN under jit, nothing to compare, half precision.
Parity with pytorch-metric-learning is in tests/reference/test_learning_<name>_reference.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import calibrax.metric_learning as C
from calibrax.core import MetricLearningProtocol
from calibrax.core.registry import get_entry

EMB = jax.random.normal(jax.random.key(0), (10, 8), jnp.float32)
LABELS = jnp.array([0, 1, 0, 2, 1, 2, 0, 3, 1, 2], jnp.int32)

PAIR_LOSSES = {
    "angular_loss": C.AngularLoss,
    "fast_ap_loss": C.FastAPLoss,
    "histogram_loss": C.HistogramLoss,
    "instance_loss": C.InstanceLoss,
    "intra_pair_variance_loss": C.IntraPairVarianceLoss,
    "nca_loss": C.NCALoss,
}
WEIGHT_LOSSES = {
    "large_margin_softmax_loss": lambda: C.LargeMarginSoftmaxLoss(4, 8, rngs=nnx.Rngs(0)),
    "sphereface_loss": lambda: C.SphereFaceLoss(4, 8, rngs=nnx.Rngs(0)),
    "soft_triple_loss": lambda: C.SoftTripleLoss(4, 8, centers_per_class=3, rngs=nnx.Rngs(0)),
    "p2s_grad_loss": lambda: C.P2SGradLoss(8, 4, rngs=nnx.Rngs(0)),
}
LOSSES = {**PAIR_LOSSES, **WEIGHT_LOSSES}
NAMES = sorted(LOSSES)


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_protocol(name):
    loss = LOSSES[name]()
    assert isinstance(loss, MetricLearningProtocol)
    entry = get_entry(name)
    assert entry.obj is type(loss)
    assert (entry.tier, entry.kind, entry.domain) == (3, "loss", "metric_learning")
    assert entry.differentiable and entry.jit_compatible and entry.higher_is_better is False
    assert type(loss).__name__ in C.__all__


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_messages(name):
    loss = LOSSES[name]()
    cases = [
        (
            ValueError,
            "expected `embeddings` to have 2 dims (batch, embedding_dim), got shape (10,)",
            (EMB[:, 0], LABELS),
        ),
        (
            ValueError,
            "expected `embeddings` and `labels` to have the same length, got 10 and 9",
            (EMB, LABELS[:9]),
        ),
        (
            TypeError,
            "expected `labels` to have an integer dtype, got float32",
            (EMB, LABELS.astype(jnp.float32)),
        ),
        (
            TypeError,
            "expected `embeddings` to have a floating dtype, got int32",
            (EMB.astype(jnp.int32), LABELS),
        ),
        (
            ValueError,
            "expected `embeddings` to be finite, got 1 NaN and 0 Inf values",
            (EMB.at[3, 2].set(jnp.nan), LABELS),
        ),
        (
            ValueError,
            "expected `embeddings` to be non-empty, got shape (0, 8)",
            (EMB[:0], LABELS[:0]),
        ),
    ]
    for exc, message, args in cases:
        with pytest.raises(exc, match=re.escape(message)):
            loss(*args)


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"instance_loss", "p2s_grad_loss"}))
def test_wrong_miner_output_shape(name):
    mask = C.PairMask(pos=jnp.zeros((9, 9), jnp.int32), neg=jnp.zeros((9, 9), jnp.int32))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `indices_tuple.pos` to have shape (10, 10) (batch, reference size), "
            "got shape (9, 9)"
        ),
    ):
        LOSSES[name]()(EMB, LABELS, mask)


@pytest.mark.parametrize("name", sorted(WEIGHT_LOSSES))
def test_class_weight_losses_refuse_reference_set(name):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `ref_emb` and `ref_labels` to be None "
            f"({type(LOSSES[name]()).__name__} does not compare with a reference set)"
        ),
    ):
        LOSSES[name]()(EMB, LABELS, None, EMB)


@pytest.mark.parametrize("name", NAMES)
def test_nan_under_jit_is_nan(name):
    bad = EMB.at[3, 2].set(jnp.nan)
    value = jax.jit(lambda e: LOSSES[name]()(e, LABELS))(bad)
    assert np.isnan(float(value))


def _value_and_grad(loss, emb, labels, miner=None):
    def f(x):
        return loss(x, labels, None if miner is None else miner(x, labels))

    return jax.jit(jax.value_and_grad(f))(emb)


@pytest.mark.parametrize(
    "name",
    ["angular_loss", "fast_ap_loss", "histogram_loss", "intra_pair_variance_loss", "nca_loss"],
)
def test_nothing_to_compare_gives_exact_zero(name):
    # One sample: no pair at all; one class: no negative (no triplet, no negative pair);
    # singletons: no positive.
    cases = {"single_sample": (EMB[:1], LABELS[:1])}
    if name != "intra_pair_variance_loss":  # it has a term for each kind of pair on its own
        cases["singletons"] = (EMB, jnp.arange(10, dtype=jnp.int32))
    if name in ("angular_loss", "histogram_loss"):
        cases["one_class"] = (EMB, jnp.zeros(10, jnp.int32))
    for case, (emb, labels) in cases.items():
        value, grad = _value_and_grad(PAIR_LOSSES[name](), emb, labels)
        assert float(value) == 0.0, case
        assert np.all(np.asarray(grad) == 0), case


@pytest.mark.parametrize("name", ["angular_loss", "histogram_loss"])
def test_miner_selecting_nothing_gives_exact_zero(name):
    miner = C.TripletMarginMiner(margin=10.0, type_of_triplets="easy")
    value, grad = _value_and_grad(PAIR_LOSSES[name](), EMB, LABELS, miner)
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_is_finite(name):
    # bfloat16 in and out; the arithmetic runs in float32 (exponentials of scaled similarities
    # overflow half precision), so value and gradient stay finite.
    labels = LABELS % 4
    emb = (3 * EMB).astype(jnp.bfloat16)
    value, grad = _value_and_grad(LOSSES[name](), emb, labels)
    assert value.dtype == jnp.bfloat16 and grad.dtype == jnp.bfloat16
    assert np.isfinite(float(value)) and float(value) >= 0
    assert np.all(np.isfinite(np.asarray(grad, np.float32)))
