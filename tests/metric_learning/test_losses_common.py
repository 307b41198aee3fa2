"""Behaviour shared by every pair/triplet loss of calibrax.metric_learning: input errors, the empty case,
half precision, the protocol and the registry."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calibrax.metric_learning as C
from calibrax.core import MetricLearningProtocol
from calibrax.core.registry import get_entry

LOSSES = {
    "contrastive_loss": C.ContrastiveLoss,
    "triplet_margin_loss": C.TripletMarginLoss,
    "ntxent_loss": C.NTXentLoss,
    "supcon_loss": C.SupConLoss,
    "multi_similarity_loss": C.MultiSimilarityLoss,
    "circle_loss": C.CircleLoss,
    "lifted_structure_loss": C.LiftedStructureLoss,
    "generalized_lifted_structure_loss": C.GeneralizedLiftedStructureLoss,
    "n_pairs_loss": C.NPairsLoss,
    "margin_loss": C.MarginLoss,
}
NAMES = sorted(LOSSES)

# The losses that need both a positive and a negative pair (or a triplet), so that labels with no
# positive pair ("singletons") or no negative pair ("one_class") must give exactly 0. The others
# (contrastive, multi-similarity, generalized lifted) have a term for each kind on its own. A batch
# of one sample has no pair at all, for every loss.
NEED_BOTH = {
    "triplet_margin_loss",
    "ntxent_loss",
    "supcon_loss",
    "circle_loss",
    "lifted_structure_loss",
    "n_pairs_loss",
    "margin_loss",
}

EMB = jax.random.normal(jax.random.key(0), (10, 8), jnp.float32)
LABELS = jnp.array([0, 1, 0, 2, 1, 2, 0, 3, 1, 2], jnp.int32)


@pytest.mark.parametrize("name", NAMES)
def test_satisfies_protocol_and_is_registered(name):
    loss = LOSSES[name]()
    assert isinstance(loss, MetricLearningProtocol)
    entry = get_entry(name)
    assert entry.obj is LOSSES[name]
    assert (entry.tier, entry.kind, entry.domain) == (3, "loss", "metric_learning")
    assert entry.differentiable and entry.jit_compatible
    assert entry.higher_is_better is False


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_messages(name):
    loss = LOSSES[name]()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `embeddings` to have 2 dims (batch, embedding_dim), got shape (10,)"
        ),
    ):
        loss(EMB[:, 0], LABELS)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `embeddings` and `labels` to have the same length, got 10 and 9"),
    ):
        loss(EMB, LABELS[:9])
    with pytest.raises(
        TypeError, match=re.escape("expected `labels` to have an integer dtype, got float32")
    ):
        loss(EMB, LABELS.astype(jnp.float32))
    with pytest.raises(
        ValueError, match=re.escape("expected `labels` to have 1 dims (batch), got shape (10, 1)")
    ):
        loss(EMB, LABELS[:, None])
    with pytest.raises(
        TypeError, match=re.escape("expected `embeddings` to have a floating dtype, got int32")
    ):
        loss(EMB.astype(jnp.int32), LABELS)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `embeddings` to be finite, got 1 NaN and 0 Inf values"),
    ):
        loss(EMB.at[3, 2].set(jnp.nan), LABELS)
    with pytest.raises(
        ValueError, match=re.escape("expected `embeddings` to be non-empty, got shape (0, 8)")
    ):
        loss(EMB[:0], LABELS[:0])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `indices_tuple.pos` to have shape (10, 10) (batch, reference size), got shape (9, 9)"
        ),
    ):
        loss(EMB, LABELS, C.PairMask(pos=jnp.zeros((9, 9), jnp.int32), neg=jnp.zeros((9, 9))))


def _value_and_grad(loss, emb, labels, miner=None):
    def f(x):
        return loss(x, labels, None if miner is None else miner(x, labels))

    return jax.jit(jax.value_and_grad(f))(emb)


@pytest.mark.parametrize("name", NAMES)
def test_nothing_to_compare_gives_exact_zero_and_zero_gradient(name):
    loss = LOSSES[name]()
    cases = {"single_sample": (EMB[:1], LABELS[:1])}
    if name in NEED_BOTH:
        cases["singletons"] = (EMB, jnp.arange(10, dtype=jnp.int32))
        cases["one_class"] = (EMB, jnp.zeros(10, jnp.int32))
    for case, (emb, labels) in cases.items():
        value, grad = _value_and_grad(loss, emb, labels)
        assert float(value) == 0.0, case
        assert np.all(np.asarray(grad) == 0), case


@pytest.mark.parametrize("name", NAMES)
def test_miner_selecting_nothing_gives_exact_zero(name):
    # Margins that no pair / triplet can satisfy: distances of normalised embeddings are in [0, 2].
    miner = (
        C.PairMarginMiner(pos_margin=10.0, neg_margin=-1.0)
        if name
        in {"contrastive_loss", "multi_similarity_loss", "generalized_lifted_structure_loss"}
        else C.TripletMarginMiner(margin=10.0, type_of_triplets="easy")
    )
    value, grad = _value_and_grad(LOSSES[name](), EMB, LABELS, miner)
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_is_finite(name, dtype):
    # Large raw embeddings (|x| ~ 300): squared norms overflow float16 unless the loss works in
    # float32, and the masked-out constants must fit the working dtype.
    emb = (300 * EMB).astype(dtype)
    value, grad = _value_and_grad(LOSSES[name](), emb, LABELS)
    assert value.dtype == dtype and grad.dtype == dtype
    assert np.isfinite(float(value)) and float(value) > 0
    assert np.all(np.isfinite(np.asarray(grad, np.float32)))
    reference, _ = _value_and_grad(LOSSES[name](), emb.astype(jnp.float32), LABELS)
    # Rounding the inputs and the result to half precision: bfloat16 keeps 8 significant bits.
    np.testing.assert_allclose(float(value), float(reference), rtol=2e-2)


def test_public_names_import():
    import calibrax.metric_learning

    for name in calibrax.metric_learning.__all__:
        assert getattr(calibrax.metric_learning, name) is not None, name
