"""Evaluation of perceptual distances against human judgments: 2AFC score and JND mAP.

References:
    Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    arXiv:1801.03924 (section 3 and the BAPPS evaluation code's definitions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["jnd_map", "two_afc_score"]


def _check_1d(x, name: str) -> None:
    checks.check_rank(x, 1, name, "examples")
    checks.check_floating(x, name)
    checks.check_nonempty(x, name)
    checks.check_finite(x, name)


def _example_2afc():
    k = jax.random.split(jax.random.key(0), 3)
    d0 = jax.random.uniform(k[0], (16,))
    d1 = jax.random.uniform(k[1], (16,))
    judge = jax.random.uniform(k[2], (16,))
    return two_afc_score, (d0, d1, judge)


@register(
    "two_afc_score",
    kind="function",
    tier=2,
    domain="perceptual",
    higher_is_better=True,
    example=_example_2afc,
)
def two_afc_score(
    d0: Float[Array, " n"], d1: Float[Array, " n"], judge: Float[Array, " n"]
) -> Float[Array, ""]:
    """Agreement of a distance with 2AFC judgments (the paper's "2AFC score").

    An example scores ``1 - judge`` when the metric finds ``p0`` closer (``d0 < d1``), ``judge``
    when it finds ``p1`` closer, and 0.5 on a tie; the score is the mean. With judgments from
    several observers its maximum is the human agreement, not 1.

    .. math::

        s = \\operatorname{mean}\\big([d_0 < d_1](1 - h) + [d_1 < d_0] h + [d_0 = d_1] / 2\\big)

    Args:
        d0: Distances between each reference and ``p0``, shape (n,).
        d1: Distances between each reference and ``p1``, shape (n,).
        judge: Fraction of observers preferring ``p1``, in [0, 1], shape (n,).

    Returns:
        The 2AFC score, a scalar in [0, 1].

    Raises:
        ValueError: On shapes that differ or are not 1-D, empty input, NaN/Inf, or ``judge``
            outside [0, 1].
        TypeError: On non-floating inputs.
    """
    for x, name in ((d0, "d0"), (d1, "d1"), (judge, "judge")):
        _check_1d(x, name)
    checks.check_same_shape(d0, d1, "d0", "d1")
    checks.check_same_shape(d0, judge, "d0", "judge")
    checks.check_range(judge, 0.0, 1.0, "judge")
    h = jnp.asarray(judge)
    score = jnp.where(d0 < d1, 1.0 - h, jnp.where(d1 < d0, h, 0.5))
    return jnp.mean(score)


def _example_jnd():
    k = jax.random.split(jax.random.key(1), 2)
    return jnd_map, (jax.random.uniform(k[0], (32,)), jax.random.uniform(k[1], (32,)))


@register(
    "jnd_map",
    kind="function",
    tier=2,
    domain="perceptual",
    higher_is_better=True,
    example=_example_jnd,
)
def jnd_map(distances: Float[Array, " n"], same: Float[Array, " n"]) -> Float[Array, ""]:
    """Mean average precision of a distance at detecting "same" pairs (the paper's JND mAP).

    Pairs are sorted by increasing distance; ``same`` (the fraction of observers who judged the
    pair identical) counts as a soft positive. Precision and recall are accumulated along the
    ranking and the area under the precision envelope is taken as in the VOC (2010+) AP.

    Args:
        distances: Distance of each pair, shape (n,).
        same: Fraction of observers judging the pair the same, in [0, 1], shape (n,).

    Returns:
        The JND mAP, a scalar in [0, 1].

    Raises:
        ValueError: On shapes that differ or are not 1-D, empty input, NaN/Inf, or ``same``
            outside [0, 1], or ``same`` all zero (no positives: AP is undefined).
        TypeError: On non-floating inputs.
    """
    _check_1d(distances, "distances")
    _check_1d(same, "same")
    checks.check_same_shape(distances, same, "distances", "same")
    checks.check_range(same, 0.0, 1.0, "same")
    if checks.is_concrete(same) and float(jnp.sum(same)) == 0.0:
        raise ValueError("expected `same` to hold at least one positive judgment, got all zeros")
    order = jnp.argsort(distances, stable=True)
    pos = jnp.asarray(same)[order]
    tp = jnp.cumsum(pos)
    fp = jnp.cumsum(1.0 - pos)
    fn = jnp.sum(pos) - tp
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    zero = jnp.zeros((1,), precision.dtype)
    one = jnp.ones((1,), precision.dtype)
    mrec = jnp.concatenate([zero, recall, one])
    mpre = jnp.concatenate([zero, precision, zero])
    envelope = jax.lax.cummax(mpre, reverse=True)
    return jnp.sum((mrec[1:] - mrec[:-1]) * envelope[1:])
