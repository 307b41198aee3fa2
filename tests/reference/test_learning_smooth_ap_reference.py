"""SmoothAPLoss against pytorch-metric-learning 2.9 where PML computes Smooth-AP (class-ordered
batches of C classes of C samples, see the class docstring), and against a hand-written loop of
the paper's definition elsewhere (values to 1e-6, gradients to central differences of the loop
to 1e-5); float64."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pml_strict_b import RTOL
from _pml_strict_b import assert_loss_parity
from _pml_strict_b import ours_value_and_grad
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C


def square_batches(seed, sizes=(2, 3, 4)):
    rng = np.random.default_rng(seed)
    return {
        f"{c}x{c}": (rng.normal(size=(c * c, 5)), np.repeat(np.arange(c) * 2 + 1, c)) for c in sizes
    }


@pytest.mark.parametrize("temperature", [0.01, 0.2])
def test_smooth_ap_matches_pml(temperature):
    ours, theirs = C.SmoothAPLoss(temperature=temperature), L.SmoothAPLoss(temperature=temperature)
    sizes = (2, 3, 4) if temperature == 0.01 else (4,)
    assert_loss_parity(ours, theirs, square_batches(int(100 * temperature), sizes))


def test_smooth_ap_miner_weights_match_pml():
    ours, theirs = C.SmoothAPLoss(), L.SmoothAPLoss()
    our_miner = C.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    their_miner = M.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    assert_loss_parity(
        lambda e, l: ours(e, l, our_miner(e, l)),
        lambda e, l: theirs(e, l, their_miner(e, l)),
        {"3x3": square_batches(7)["3x3"]},
    )


def loop_reference(emb, labels, temperature):
    """Smooth-AP as in the paper, one anchor and one candidate positive at a time."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    s = x @ x.T
    n = len(labels)
    sig = lambda v: 1 / (1 + np.exp(-v / temperature))  # noqa: E731
    losses = []
    for a in range(n):
        pos = [l for l in range(n) if labels[l] == labels[a]]
        total = 0.0
        for l in pos:
            r_all = 1 + sum(sig(s[a, m] - s[a, l]) for m in range(n) if m != l)
            r_pos = 1 + sum(sig(s[a, m] - s[a, l]) for m in pos if m != l)
            total += r_pos / r_all
        losses.append(1 - total / len(pos))
    return float(np.mean(losses))


def test_smooth_ap_matches_loop_on_any_batch():
    rng = np.random.default_rng(0)
    loss = C.SmoothAPLoss(temperature=0.1)
    run = ours_value_and_grad(loss)
    cases = {
        "one_class": np.zeros(10, np.int64),
        "all_distinct": np.arange(10),
        "5_classes_of_2_shuffled": rng.permutation(np.repeat(np.arange(5), 2)),
        "2_classes_of_5": np.repeat([3, 8], 5),
    }
    for name, lab in cases.items():
        emb = rng.normal(size=(10, 4))
        value, grad = run(emb, lab)
        np.testing.assert_allclose(value, loop_reference(emb, lab, 0.1), rtol=RTOL, err_msg=name)
        # Central differences of the loop (step 1e-5: truncation ~1e-10, rounding ~1e-11).
        numeric = np.zeros_like(emb)
        for idx in np.ndindex(*emb.shape):
            step = np.zeros_like(emb)
            step[idx] = 1e-5
            up = loop_reference(emb + step, lab, 0.1)
            down = loop_reference(emb - step, lab, 0.1)
            numeric[idx] = (up - down) / 2e-5
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_unequal_classes():
    emb = jnp.ones((5, 3)) + jnp.arange(15.0).reshape(5, 3) ** 2
    lab = jnp.array([0, 0, 1, 1, 1])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected every class in `labels` to have the same number of samples "
            "(SmoothAPLoss; use MPerClassSampler), got class sizes [2, 3]"
        ),
    ):
        C.SmoothAPLoss()(emb, lab)
    assert np.isnan(float(jax.jit(C.SmoothAPLoss())(emb, lab)))
