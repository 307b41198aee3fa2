"""ProxyAnchorLoss against a hand-written float64 loop over proxies (rtol 1e-10: same formula,
same precision)."""

from __future__ import annotations

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metric_learning import MeanReducer
from calibrax.metric_learning import ProxyAnchorLoss


def _loop(embeddings, labels, proxies, margin, alpha, mean_reducer=False):
    p = proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    num_classes = len(proxies)
    pos, neg, with_pos = [], [], 0
    for c in range(num_classes):
        s = x @ p[c]
        mine = labels == c
        with_pos += int(mine.any())
        pos.append(math.log1p(np.sum(np.exp(-alpha * (s[mine] - margin)))))
        neg.append(math.log1p(np.sum(np.exp(alpha * (s[~mine] + margin)))))
    if mean_reducer:
        return np.mean(pos) + np.mean(neg)
    return np.sum(pos) / with_pos + np.sum(neg) / num_classes


BATCHES = {
    "mixed": np.array([3, 1, 1, 2, 0, 0, 3, 1]),  # class 4 absent, class 2 single
    "one_class": np.full(6, 2),
    "single": np.array([1]),
}


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize(("margin", "alpha"), [(0.1, 32.0), (0.3, 4.0)])
def test_matches_loop(batch: str, margin: float, alpha: float) -> None:
    loss = ProxyAnchorLoss(
        5, 4, margin=margin, alpha=alpha, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    labels = BATCHES[batch]
    embeddings = np.random.default_rng(0).normal(size=(labels.size, 4))
    want = _loop(embeddings, labels, np.asarray(loss.proxies[...]), margin, alpha)
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_mean_reducer_averages_over_all_proxies() -> None:
    loss = ProxyAnchorLoss(5, 4, reducer=MeanReducer(), param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    labels = BATCHES["mixed"]
    embeddings = np.random.default_rng(1).normal(size=(labels.size, 4))
    want = _loop(embeddings, labels, np.asarray(loss.proxies[...]), 0.1, 32.0, mean_reducer=True)
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_init_is_kaiming_fan_out() -> None:
    # torch.nn.init.kaiming_normal_(mode="fan_out") on a (num_classes, embedding_size) tensor:
    # std = sqrt(2 / num_classes). 20000 draws: sample std within 2%.
    proxies = np.asarray(ProxyAnchorLoss(50, 400, rngs=nnx.Rngs(0)).proxies[...])
    assert proxies.shape == (50, 400)
    assert abs(proxies.std() / math.sqrt(2 / 50) - 1) < 0.02


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match=re.escape("expected `alpha` to be a positive number")):
        ProxyAnchorLoss(3, 4, alpha=-1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=re.escape("expected `margin` to be finite, got nan")):
        ProxyAnchorLoss(3, 4, margin=float("nan"), rngs=nnx.Rngs(0))
