"""The ranking head of LPIPS training: from two distances to the probability that p1 is closer.

Input features per example (Zhang et al. 2018, "Dist2LogitLayer"): :math:`d_0`, :math:`d_1`,
:math:`d_0 - d_1`, :math:`d_0 / (d_1 + 0.1)`, :math:`d_1 / (d_0 + 0.1)`, passed through 1x1
convolutions 5 -> 32 -> 32 -> 1 (on a 1x1 map: dense layers) with LeakyReLU(0.2). The sigmoid of
the output is the predicted judgment; training minimises the binary cross-entropy against the
human judgment (computed from logits for numerical stability).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

__all__ = ["RankingHead", "ranking_loss"]

EPS = 0.1


class RankingHead(nnx.Module):
    """Maps distance pairs (d0, d1) to the logit of "p1 is judged closer".

    Args:
        hidden: Width of the two hidden layers (32 in the paper).
        rngs: Random streams for the initialisation.
    """

    def __init__(self, *, hidden: int = 32, rngs: nnx.Rngs) -> None:
        self.l0 = nnx.Linear(5, hidden, rngs=rngs)
        self.l1 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, d0: Float[Array, " batch"], d1: Float[Array, " batch"]) -> jax.Array:
        d0 = d0.astype(jnp.float32)
        d1 = d1.astype(jnp.float32)
        feats = jnp.stack([d0, d1, d0 - d1, d0 / (d1 + EPS), d1 / (d0 + EPS)], axis=-1)
        h = jax.nn.leaky_relu(self.l0(feats), 0.2)
        h = jax.nn.leaky_relu(self.l1(h), 0.2)
        return self.l2(h)[..., 0]


def ranking_loss(
    head: RankingHead, d0: jax.Array, d1: jax.Array, judge: jax.Array
) -> Float[Array, ""]:
    """Mean binary cross-entropy between the head's prediction and the judgments."""
    logits = head(d0, d1)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, judge.astype(jnp.float32)))
