"""The PML 2.9 reducers (class-weighted, divisor, do-nothing, multiple, per-anchor) against
pytorch-metric-learning, values and gradients in float64, through the losses that use them.

Tolerance: 1e-10 relative. Both sides compute the same float64 sums in a different order, so the
differences are a few ulps; 1e-10 leaves room for that and would catch any wrong weight or count
(those change the result at the 1e-2 level).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

import calibrax.metric_learning as C

RTOL = 1e-10

LABEL_CASES = {
    "mixed": np.array([0, 1, 2, 0, 1, 2, 0, 3, 3, 1], np.int64),
    "one_class": np.zeros(10, np.int64),
    "all_distinct": np.arange(10, dtype=np.int64),
}
CLASS_WEIGHTS = [0.5, 2.0, 1.5, 3.0, 0.25, 1.0, 0.7, 1.3, 0.9, 2.2]


def _ours(loss, x, labels, miner=None):
    def f(e):
        if miner is None:
            return loss(e, jnp.asarray(labels))
        return loss(e, jnp.asarray(labels), miner(e, jnp.asarray(labels)))

    value, grad = jax.value_and_grad(f)(jnp.asarray(x))
    return float(value), np.asarray(grad)


def _theirs(loss, x, labels, miner=None):
    e = torch.tensor(x, requires_grad=True)
    lab = torch.tensor(labels)
    idx = None if miner is None else miner(e, lab)
    out = loss(e, lab, idx)
    out.backward()
    return float(out), e.grad.numpy()


def _check(ours, theirs):
    np.testing.assert_allclose(ours[0], theirs[0], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=RTOL, atol=1e-12)


def _emb(seed, n=10, d=5):
    return np.random.default_rng(seed).normal(size=(n, d))


CASES = [
    # (name, our loss factory, their loss factory, miner pair or None)
    (
        "contrastive_class_weighted",
        lambda: C.ContrastiveLoss(
            pos_margin=0.3, neg_margin=1.2, reducer=C.ClassWeightedReducer(CLASS_WEIGHTS)
        ),
        lambda: pml_losses.ContrastiveLoss(
            pos_margin=0.3,
            neg_margin=1.2,
            reducer=pml_reducers.ClassWeightedReducer(
                torch.tensor(CLASS_WEIGHTS, dtype=torch.float64)
            ),
        ),
        None,
    ),
    (
        "triplet_class_weighted",
        lambda: C.TripletMarginLoss(margin=0.3, reducer=C.ClassWeightedReducer(CLASS_WEIGHTS)),
        lambda: pml_losses.TripletMarginLoss(
            margin=0.3,
            reducer=pml_reducers.ClassWeightedReducer(
                torch.tensor(CLASS_WEIGHTS, dtype=torch.float64)
            ),
        ),
        None,
    ),
    (
        "triplet_class_weighted_mined",
        lambda: C.TripletMarginLoss(margin=0.3, reducer=C.ClassWeightedReducer(CLASS_WEIGHTS)),
        lambda: pml_losses.TripletMarginLoss(
            margin=0.3,
            reducer=pml_reducers.ClassWeightedReducer(
                torch.tensor(CLASS_WEIGHTS, dtype=torch.float64)
            ),
        ),
        (
            C.TripletMarginMiner(margin=0.4, type_of_triplets="semihard"),
            pml_miners.TripletMarginMiner(margin=0.4, type_of_triplets="semihard"),
        ),
    ),
    (
        "contrastive_per_anchor",
        lambda: C.ContrastiveLoss(pos_margin=0.3, neg_margin=1.2, reducer=C.PerAnchorReducer()),
        lambda: pml_losses.ContrastiveLoss(
            pos_margin=0.3, neg_margin=1.2, reducer=pml_reducers.PerAnchorReducer()
        ),
        None,
    ),
    (
        "contrastive_per_anchor_nonzero_mined",
        lambda: C.ContrastiveLoss(reducer=C.PerAnchorReducer(C.AvgNonZeroReducer())),
        lambda: pml_losses.ContrastiveLoss(
            reducer=pml_reducers.PerAnchorReducer(pml_reducers.AvgNonZeroReducer())
        ),
        (
            C.PairMarginMiner(pos_margin=0.5, neg_margin=1.3),
            pml_miners.PairMarginMiner(pos_margin=0.5, neg_margin=1.3),
        ),
    ),
    (
        "contrastive_per_anchor_of_class_weighted",
        lambda: C.ContrastiveLoss(
            reducer=C.PerAnchorReducer(C.ClassWeightedReducer(CLASS_WEIGHTS))
        ),
        lambda: pml_losses.ContrastiveLoss(
            reducer=pml_reducers.PerAnchorReducer(
                pml_reducers.ClassWeightedReducer(torch.tensor(CLASS_WEIGHTS, dtype=torch.float64))
            )
        ),
        None,
    ),
    (
        "contrastive_multiple",
        lambda: C.ContrastiveLoss(
            reducer=C.MultipleReducers(
                {"pos_loss": C.SumReducer()}, default_reducer=C.AvgNonZeroReducer()
            )
        ),
        lambda: pml_losses.ContrastiveLoss(
            reducer=pml_reducers.MultipleReducers(
                {"pos_loss": pml_reducers.SumReducer()},
                default_reducer=pml_reducers.AvgNonZeroReducer(),
            )
        ),
        None,
    ),
    (
        "triplet_multiple",
        lambda: C.TripletMarginLoss(
            reducer=C.MultipleReducers({"loss": C.ClassWeightedReducer(CLASS_WEIGHTS)})
        ),
        lambda: pml_losses.TripletMarginLoss(
            reducer=pml_reducers.MultipleReducers(
                {
                    "loss": pml_reducers.ClassWeightedReducer(
                        torch.tensor(CLASS_WEIGHTS, dtype=torch.float64)
                    )
                }
            )
        ),
        None,
    ),
]


@pytest.mark.parametrize("labels_name", list(LABEL_CASES))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reducer_through_loss_matches_pml(case, labels_name):
    _, ours_f, theirs_f, miners = case
    labels = LABEL_CASES[labels_name]
    for seed in (0, 1) if labels_name == "mixed" else (2,):
        x = _emb(seed)
        our_miner, their_miner = miners if miners is not None else (None, None)
        _check(_ours(ours_f(), x, labels, our_miner), _theirs(theirs_f(), x, labels, their_miner))


def test_class_weighted_per_sample_loss_against_pml_losses():
    """MultiSimilarityLoss gives one loss per anchor. PML's losses there have shape (B, 1), so
    ``losses * weights[labels]`` broadcasts to (B, B) and PML returns mean(losses) *
    mean(weights[labels]) (a PML broadcasting bug); we weight each anchor's loss by its own class
    weight, checked here against PML's unreduced losses (DoNothingReducer)."""
    labels = LABEL_CASES["mixed"]
    x = _emb(0)
    terms = pml_losses.MultiSimilarityLoss(reducer=pml_reducers.DoNothingReducer())(
        torch.tensor(x), torch.tensor(labels)
    )
    per_anchor = terms["loss"]["losses"].numpy()[:, 0]
    expected = np.mean(per_anchor * np.asarray(CLASS_WEIGHTS)[labels])
    ours = C.MultiSimilarityLoss(reducer=C.ClassWeightedReducer(CLASS_WEIGHTS))
    np.testing.assert_allclose(
        float(ours(jnp.asarray(x), jnp.asarray(labels))), expected, rtol=RTOL
    )


@pytest.mark.parametrize("name", ["ArcFaceLoss", "CosFaceLoss"])
def test_class_weighted_and_per_anchor_in_class_weight_losses_match_pml(name):
    from flax import nnx

    labels = np.array([0, 1, 2, 0, 1, 2, 0, 3, 3, 1])
    x = _emb(9)
    w = torch.tensor(CLASS_WEIGHTS[:4], dtype=torch.float64)
    for ours_r, theirs_r in [
        (C.ClassWeightedReducer(CLASS_WEIGHTS[:4]), pml_reducers.ClassWeightedReducer(w)),
        (
            C.PerAnchorReducer(C.ClassWeightedReducer(CLASS_WEIGHTS[:4])),
            pml_reducers.PerAnchorReducer(pml_reducers.ClassWeightedReducer(w)),
        ),
    ]:
        torch.manual_seed(0)
        theirs = getattr(pml_losses, name)(
            num_classes=4, embedding_size=5, reducer=theirs_r
        ).double()
        ours = getattr(C, name)(4, 5, reducer=ours_r, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        ours.W[...] = jnp.asarray(theirs.W.detach().numpy())
        _check(_ours(ours, x, labels), _theirs(theirs, x, labels))


def test_divisor_reducer_matches_pml():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0, 2, 7)
    for divisor in (3, 0, 7.5):
        theirs = pml_reducers.DivisorReducer()(
            {
                "loss": {
                    "losses": torch.tensor(losses),
                    "indices": torch.arange(7),
                    "reduction_type": "element",
                    "divisor": divisor,
                }
            },
            torch.zeros(7, 2, dtype=torch.float64),
            torch.zeros(7, dtype=torch.long),
        )
        ours = C.DivisorReducer()(jnp.asarray(losses), jnp.ones(7, jnp.int32), divisor=divisor)
        np.testing.assert_allclose(float(ours), float(theirs), rtol=RTOL, atol=0)
    # Without a divisor: the total weight (PML raises KeyError there).
    ours = C.DivisorReducer()(jnp.asarray(losses), jnp.array([1, 2, 0, 1, 1, 1, 1]))
    np.testing.assert_allclose(float(ours), (losses @ [1, 2, 0, 1, 1, 1, 1]) / 7, rtol=RTOL)
    jitted = jax.jit(lambda v, d: C.DivisorReducer()(v, jnp.ones(7, jnp.int32), divisor=d))
    np.testing.assert_allclose(float(jitted(jnp.asarray(losses), 4.0)), losses.sum() / 4, rtol=RTOL)


def test_do_nothing_reducer_returns_pml_per_pair_losses():
    labels = LABEL_CASES["mixed"]
    x = _emb(5)
    terms = C.ContrastiveLoss(reducer=C.DoNothingReducer())(jnp.asarray(x), jnp.asarray(labels))
    theirs = pml_losses.ContrastiveLoss(reducer=pml_reducers.DoNothingReducer())(
        torch.tensor(x), torch.tensor(labels)
    )
    assert set(terms) == set(theirs) == {"pos_loss", "neg_loss"}
    for name in terms:
        a, b = (t.numpy() for t in theirs[name]["indices"])
        values, weights = np.asarray(terms[name].values), np.asarray(terms[name].weights)
        np.testing.assert_array_equal(np.argwhere(weights > 0), np.stack([a, b], 1))
        np.testing.assert_allclose(values[a, b], theirs[name]["losses"].numpy(), rtol=RTOL)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "DoNothingReducer: TripletMarginLoss reduces while it computes and has no unreduced terms"
        ),
    ):
        C.TripletMarginLoss(reducer=C.DoNothingReducer())(jnp.asarray(x), jnp.asarray(labels))


def test_reducers_under_jit():
    labels = jnp.asarray(LABEL_CASES["mixed"])
    x = jnp.asarray(_emb(6))
    for reducer in (
        C.ClassWeightedReducer(CLASS_WEIGHTS),
        C.PerAnchorReducer(),
        C.MultipleReducers({"pos_loss": C.SumReducer()}),
    ):
        loss = C.ContrastiveLoss(reducer=reducer)
        np.testing.assert_allclose(
            float(jax.jit(lambda e, l, f=loss: f(e, l))(x, labels)),
            float(loss(x, labels)),
            rtol=1e-12,
        )
    # Out-of-range labels under jit: NaN, not a plausible number.
    loss = C.TripletMarginLoss(reducer=C.ClassWeightedReducer([1.0, 2.0]))
    assert np.isnan(float(jax.jit(lambda e, l: loss(e, l))(x, labels)))


def test_reducer_errors():
    x = jnp.asarray(_emb(0))
    labels = jnp.asarray(LABEL_CASES["mixed"])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `weights` to be a non-empty 1-D sequence of class weights, got shape (0,)"
        ),
    ):
        C.ClassWeightedReducer([])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `weights` to be a non-empty 1-D sequence of class weights, got 'abc'"
        ),
    ):
        C.ClassWeightedReducer("abc")
    with pytest.raises(
        ValueError, match=re.escape("expected `weights` to be finite, got [1.0, nan]")
    ):
        C.ClassWeightedReducer([1.0, float("nan")])
    with pytest.raises(
        ValueError,
        match=re.escape("expected labels in [0, 2) to index `weights`, got labels in [0, 3]"),
    ):
        C.ContrastiveLoss(reducer=C.ClassWeightedReducer([1.0, 2.0]))(x, labels)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "ClassWeightedReducer needs the batch labels: pass it as a loss's `reducer=`"
        ),
    ):
        C.ClassWeightedReducer([1.0])(jnp.ones(3), jnp.ones(3))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected loss values of shape (3,), (3, 1), (1, 3) or (3, N) for a batch of 3, got shape (2, 2, 2)"
        ),
    ):
        C.ClassWeightedReducer([1.0]).bind(jnp.zeros(3, jnp.int32))(
            jnp.ones((2, 2, 2)), jnp.ones((2, 2, 2))
        )
    with pytest.raises(
        NotImplementedError, match=re.escape("PerAnchorReducer: triplet reduction not supported")
    ):
        C.TripletMarginLoss(reducer=C.PerAnchorReducer())(x, labels)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `reducer` to be a calibrax.metric_learning reducer or None, got str"
        ),
    ):
        C.PerAnchorReducer("mean")
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `reducers` to map sub-loss names (str) to calibrax.metric_learning reducers, got {'loss': 1}"
        ),
    ):
        C.MultipleReducers({"loss": 1})
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `default_reducer` to be a calibrax.metric_learning reducer or None, got int"
        ),
    ):
        C.MultipleReducers({}, default_reducer=1)
    with pytest.raises(
        ValueError, match=re.escape("expected `divisor` to be finite and >= 0, got -1.0")
    ):
        C.DivisorReducer()(jnp.ones(3), jnp.ones(3), divisor=-1)
