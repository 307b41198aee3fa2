"""Parity of calibrax.metric_learning.DynamicSoftMarginLoss with pytorch-metric-learning 2.9
(float64, 1e-6 relative on values and gradients, see _pml_strict_b), over several training steps
(PML's histogram detached between steps, see the class docstring)."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_strict_b import RTOL
from _pml_strict_b import VALUE_ATOL
from _pml_strict_b import assert_close
from _pml_strict_b import labelled_batches
from _pml_strict_b import pml_value_and_grad
from flax import nnx
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C


def stepper(loss, miner=None, with_ref=False):
    """A jitted training step of the stateful loss (``nnx.jit`` of ``nnx.value_and_grad``, which
    carry the histogram's update out): (value, grads)."""

    def f(e, r, m, l):
        if with_ref:
            return m(e, ref_emb=r)
        if l is None:
            return m(e)
        return m(e, l, None if miner is None else miner(e, l))

    step = nnx.jit(nnx.value_and_grad(f, argnums=(0, 1)))

    def run(e, r=None, l=None):
        r = jnp.zeros((1, 1)) if r is None else jnp.asarray(r)
        lab = None if l is None else jnp.asarray(l, jnp.int32)
        value, grads = step(jnp.asarray(e), r, loss, lab)
        return float(value), [np.asarray(g) for g in grads]

    return run


def check_steps(ours, theirs, batches, *, miners=(None, None), with_ref=False):
    run = stepper(ours, miners[0], with_ref)
    for name, (e, l) in batches:
        if with_ref:
            v1, (g1, gr1) = run(e, r=l)
            v2, (g2, gr2) = pml_value_and_grad(lambda a, b: theirs(a, ref_emb=b), e, l, wrt=(0, 1))
            assert_close(gr1, gr2, name)
        else:
            v1, (g1, _) = run(e, l=l)
            if miners[1] is None:
                v2, (g2,) = pml_value_and_grad(theirs, e, l)
            else:
                v2, (g2,) = pml_value_and_grad(lambda a, b: theirs(a, b, miners[1](a, b)), e, l)
        theirs.hist_ = theirs.hist_.detach()
        np.testing.assert_allclose(v1, v2, rtol=RTOL, atol=VALUE_ATOL, err_msg=name)
        assert_close(g1, g2, name)
        np.testing.assert_allclose(
            np.asarray(ours.hist[...]), theirs.hist_.numpy(), rtol=1e-6, atol=1e-7, err_msg=name
        )


@pytest.mark.parametrize("shape", [(14, 6), (11, 8)])
def test_dsm_labelled_steps_match_pml(shape):
    cases = labelled_batches(*shape, seed=shape[0])
    # Degenerate batches first: no triplet, no histogram update.
    order = ["one_class", "all_distinct", "mixed", "two_classes", "mixed"]
    batches = [(f"{i}:{k}", cases[k]) for i, k in enumerate(order)]
    check_steps(
        C.DynamicSoftMarginLoss(momentum=0.3), L.DynamicSoftMarginLoss(momentum=0.3), batches
    )


def test_dsm_options_and_miner_match_pml():
    cases = labelled_batches(14, 6, seed=4)
    kwargs = {"min_val": -3.0, "num_bins": 7, "momentum": 0.5}
    batches = [("mixed", cases["mixed"]), ("two", cases["two_classes"])]
    check_steps(C.DynamicSoftMarginLoss(**kwargs), L.DynamicSoftMarginLoss(**kwargs), batches)
    # Margin-mined triplets take the anchor-slice path (pair-mined ones the all-triplets one).
    for our_miner, their_miner in [
        (
            C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
            M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        ),
    ]:
        check_steps(
            C.DynamicSoftMarginLoss(),
            L.DynamicSoftMarginLoss(),
            batches,
            miners=(our_miner, their_miner),
        )


def pml_values(theirs, batches, *, fresh=False):
    out = []
    for e, r in batches:
        if fresh:
            theirs.hist_ = torch.zeros_like(theirs.hist_)
        with torch.no_grad():
            out.append(float(theirs(torch.tensor(e), ref_emb=torch.tensor(r))))
    return out


def test_dsm_unlabelled_pairs_match_pml():
    # PML 2.9 cannot differentiate this path (it fills the distance matrix's diagonal in place,
    # and autograd refuses): values against PML over two steps, gradients against central
    # differences of PML's value (a fresh loss each time: first-step histogram; step 1e-6,
    # error ~1e-9).
    rng = np.random.default_rng(0)
    batches = []
    for n in (6, 5):
        x = rng.normal(size=(n, 4))
        batches.append((x, x + 0.5 * rng.normal(size=(n, 4))))
    ours = C.DynamicSoftMarginLoss(momentum=0.2)
    run = stepper(ours, with_ref=True)
    want = pml_values(L.DynamicSoftMarginLoss(momentum=0.2), batches)
    for (e, r), v2 in zip(batches, want, strict=True):
        v1, _ = run(e, r=r)
        np.testing.assert_allclose(v1, v2, rtol=RTOL)
    e, r = batches[0]
    _, (g_e, g_r) = stepper(C.DynamicSoftMarginLoss(), with_ref=True)(e, r=r)
    fresh = L.DynamicSoftMarginLoss()
    for grad, which in ((g_e, 0), (g_r, 1)):
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(*grad.shape):
            pair = [e.copy(), r.copy()], [e.copy(), r.copy()]
            pair[0][which][idx] += 1e-6
            pair[1][which][idx] -= 1e-6
            up, down = (pml_values(fresh, [tuple(p)], fresh=True)[0] for p in pair)
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    # The batch against itself, no labels.
    x = rng.normal(size=(8, 5))
    with torch.no_grad():
        v2 = float(L.DynamicSoftMarginLoss()(torch.tensor(x)))
    np.testing.assert_allclose(float(C.DynamicSoftMarginLoss()(jnp.asarray(x))), v2, rtol=RTOL)


def test_dsm_bad_configuration():
    with pytest.raises(
        ValueError,
        match=re.escape("expected `distance` to be an LpDistance with normalize_embeddings=True"),
    ):
        C.DynamicSoftMarginLoss(distance=C.LpDistance(normalize_embeddings=False))
    with pytest.raises(ValueError, match=re.escape("expected `num_bins` to be a positive integer")):
        C.DynamicSoftMarginLoss(num_bins=0)
