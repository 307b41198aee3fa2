"""The exact message of every checker in ``calibrax.core.checks``, what passes, and which checks run
under ``jax.jit`` (shape and dtype: always) or are recorded for tracers (values; see test_jit_checks.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calibrax.core import checks

NAN, INF = float("nan"), float("inf")


def _raises(exc: type[Exception], msg: str, fn, *args, **kwargs) -> None:
    with pytest.raises(exc) as excinfo:
        fn(*args, **kwargs)
    assert str(excinfo.value) == msg


def test_every_public_checker_is_tested():
    tested = {name[len("test_") :] for name in globals() if name.startswith("test_check_")}
    public = {name for name in checks.__all__ if name.startswith("check_")}
    assert public <= tested, sorted(public - tested)


def test_is_concrete():
    assert checks.is_concrete(jnp.zeros(2)) and checks.is_concrete(np.zeros(2))
    assert checks.is_concrete(1.0)
    seen = []
    jax.jit(lambda x: seen.append(checks.is_concrete(x)) or x)(jnp.zeros(2))
    assert seen == [False]


def test_check_rank():
    checks.check_rank(np.zeros((2, 3)), 2, "x")
    _raises(
        ValueError,
        "expected `x` to have 2 dims, got shape (3,)",
        checks.check_rank,
        np.zeros(3),
        2,
        "x",
    )
    _raises(
        ValueError,
        "expected `images` to have 4 dims (batch, height, width, channels), got shape (32, 32, 3)",
        checks.check_rank,
        np.zeros((32, 32, 3)),
        4,
        "images",
        "batch, height, width, channels",
    )
    _raises(ValueError, "expected `s` to have 1 dims, got shape ()", checks.check_rank, 1.0, 1, "s")


def test_check_ndim_in():
    checks.check_ndim_in(np.zeros((2, 3)), (1, 2), "x")
    _raises(
        ValueError,
        "expected `x` to have 1 or 2 dims, got shape (1, 2, 3)",
        checks.check_ndim_in,
        np.zeros((1, 2, 3)),
        (1, 2),
        "x",
    )


def test_check_same_shape():
    checks.check_same_shape(np.zeros((2, 3)), jnp.zeros((2, 3)), "a", "b")
    _raises(
        ValueError,
        "expected `predictions` and `targets` to have the same shape, got (2, 3) and (3, 2)",
        checks.check_same_shape,
        np.zeros((2, 3)),
        np.zeros((3, 2)),
        "predictions",
        "targets",
    )


def test_check_same_length():
    checks.check_same_length(np.zeros((4, 3)), np.zeros(4), "embeddings", "labels")
    _raises(
        ValueError,
        "expected `embeddings` and `labels` to have the same length, got 4 and 5",
        checks.check_same_length,
        np.zeros((4, 3)),
        np.zeros(5),
        "embeddings",
        "labels",
    )
    _raises(
        ValueError,
        "expected `a` and `b` to have the same length, got a scalar and 2",
        checks.check_same_length,
        1.0,
        np.zeros(2),
        "a",
        "b",
    )


def test_check_dim():
    checks.check_dim(np.zeros((2, 3)), -1, 3, "x")
    _raises(
        ValueError,
        "expected `images` to have channels 3 on axis -1, got shape (2, 8, 8, 1)",
        checks.check_dim,
        np.zeros((2, 8, 8, 1)),
        -1,
        3,
        "images",
        "channels",
    )
    # An axis the array does not have is the same clear error, not an IndexError.
    _raises(
        ValueError,
        "expected `x` to have size 3 on axis 1, got shape (3,)",
        checks.check_dim,
        np.zeros(3),
        1,
        3,
        "x",
    )


def test_check_floating():
    for ok in (np.zeros(2, np.float32), jnp.zeros(2, jnp.bfloat16), 1.0, [0.5, 1.5]):
        checks.check_floating(ok, "x")
    _raises(
        TypeError,
        "expected `x` to have a floating dtype, got int32",
        checks.check_floating,
        np.zeros(2, np.int32),
        "x",
    )
    _raises(
        TypeError,
        "expected `x` to have a floating dtype, got int64",
        checks.check_floating,
        [1, 2],
        "x",
    )


def test_check_integer():
    for ok in (np.zeros(2, np.int32), np.zeros(2, np.uint8), np.zeros(2, bool), 3):
        checks.check_integer(ok, "labels")
    _raises(
        TypeError,
        "expected `labels` to have an integer dtype, got float32",
        checks.check_integer,
        np.zeros(2, np.float32),
        "labels",
    )


def test_check_finite():
    checks.check_finite(np.array([1.0, 2.0]), "x")
    checks.check_finite(np.array([1, 2]), "x")  # integers cannot be NaN
    _raises(
        ValueError,
        "expected `x` to be finite, got 2 NaN and 1 Inf values",
        checks.check_finite,
        np.array([NAN, 1.0, -INF, NAN]),
        "x",
    )


def test_check_range():
    checks.check_range(np.array([0.0, 1.0]), 0.0, 1.0, "p")
    checks.check_range(np.zeros(0), 0.0, 1.0, "p")
    _raises(
        ValueError,
        "expected `p` to be in [0, 1], got values in [-0.5, 2]",
        checks.check_range,
        np.array([-0.5, 2.0]),
        0.0,
        1.0,
        "p",
    )
    _raises(
        ValueError,
        "expected `images` to be in [0, 255] (uint8 pixel values), got values in [0, 300]",
        checks.check_range,
        np.array([0, 300]),
        0,
        255,
        "images",
        hint="uint8 pixel values",
    )


def test_check_probabilities():
    checks.check_probabilities(np.array([[0.25, 0.75], [1.0, 0.0]]), "probs")
    checks.check_probabilities(np.array([0.2, 0.9]), "probs", axis=None)
    _raises(
        ValueError,
        "expected `probs` to sum to 1 along axis -1 (atol 0.0001), got a row summing to 0.5",
        checks.check_probabilities,
        np.array([[0.5, 0.5], [0.25, 0.25]]),
        "probs",
    )
    _raises(
        ValueError,
        "expected `probs` to be in [0, 1], got values in [-0.1, 1.1]",
        checks.check_probabilities,
        np.array([-0.1, 1.1]),
        "probs",
    )
    _raises(
        ValueError,
        "expected `probs` to be finite, got 1 NaN and 0 Inf values",
        checks.check_probabilities,
        np.array([NAN, 1.0]),
        "probs",
    )
    _raises(
        TypeError,
        "expected `probs` to have a floating dtype, got int64",
        checks.check_probabilities,
        np.array([0, 1]),
        "probs",
    )


def test_check_nonempty():
    checks.check_nonempty(np.zeros(1), "x")
    _raises(
        ValueError,
        "expected `x` to be non-empty, got shape (0, 3)",
        checks.check_nonempty,
        np.zeros((0, 3)),
        "x",
    )


def test_check_min_samples():
    checks.check_min_samples(np.zeros((2, 3)), 2, "features")
    _raises(
        ValueError,
        "expected `features` to have at least 2 samples, got 1",
        checks.check_min_samples,
        np.zeros((1, 3)),
        2,
        "features",
    )
    _raises(
        ValueError,
        "expected `features` to have at least 1 samples, got 0",
        checks.check_min_samples,
        np.float32(1.0),
        1,
        "features",
    )


def test_check_labels_in_range():
    checks.check_labels_in_range(np.array([0, 2]), 3)
    checks.check_labels_in_range(np.zeros(0, np.int32), 3)
    _raises(
        ValueError,
        "expected `labels` to be in [0, 2] (num_classes=3), got values in [-1, 3]",
        checks.check_labels_in_range,
        np.array([-1, 3]),
        3,
    )
    _raises(
        ValueError,
        "expected `targets` to be in [0, 1] (num_classes=2), got values in [0, 2]",
        checks.check_labels_in_range,
        np.array([0, 2]),
        2,
        "targets",
    )


def test_check_positive_int():
    checks.check_positive_int(1, "k")
    checks.check_positive_int(np.int64(3), "k")
    for bad in (0, -2, 1.0, True, "2", None):
        _raises(
            ValueError,
            f"expected `k` to be a positive integer, got {bad!r}",
            checks.check_positive_int,
            bad,
            "k",
        )


def test_check_choice():
    checks.check_choice("mean", ("mean", "sum"), "reduction")
    _raises(
        ValueError,
        "expected `reduction` to be one of 'mean', 'sum', got 'max'",
        checks.check_choice,
        "max",
        ("mean", "sum"),
        "reduction",
    )


def test_check_k():
    checks.check_k(5, 5)
    _raises(
        ValueError,
        "expected `k` to be at most the number of classes (5), got 6",
        checks.check_k,
        6,
        5,
    )
    _raises(
        ValueError,
        "expected `top_k` to be at most the number of samples (4), got 9",
        checks.check_k,
        9,
        4,
        "top_k",
        "the number of samples",
    )
    _raises(ValueError, "expected `k` to be a positive integer, got 0", checks.check_k, 0, 5)


def test_check_same_dtype():
    checks.check_same_dtype(np.zeros(2, np.float32), jnp.zeros(2, jnp.float32), "a", "b")
    _raises(
        TypeError,
        "expected `a` and `b` to have the same dtype, got float32 and float64",
        checks.check_same_dtype,
        np.zeros(2, np.float32),
        np.zeros(2, np.float64),
        "a",
        "b",
    )


def test_check_accumulated():
    checks.check_accumulated(jnp.asarray(3), 3)
    _raises(
        ValueError,
        "expected at least 1 samples accumulated by `update` before `compute`, got 0",
        checks.check_accumulated,
        jnp.asarray(0),
    )
    _raises(
        ValueError,
        "expected at least 2 samples accumulated by `update_real` before `compute`, got 1",
        checks.check_accumulated,
        np.int64(1),
        2,
        "update_real",
    )


def test_check_images():
    checks.check_images(np.zeros((2, 8, 8, 3), np.float32))
    checks.check_images(np.zeros((1, 8, 8, 1), np.float32), "gray", channels=1, min_size=8)
    cases = [
        (
            ValueError,
            "expected `images` to have 4 dims (batch, height, width, channels), got shape (8, 8, 3)",
            np.zeros((8, 8, 3), np.float32),
            {},
        ),
        (
            ValueError,
            "expected `images` to have 3 channels (last axis), got shape (2, 3, 8, 8)",
            np.zeros((2, 3, 8, 8), np.float32),
            {},
        ),
        (
            ValueError,
            "expected `images` to be non-empty, got shape (0, 8, 8, 3)",
            np.zeros((0, 8, 8, 3), np.float32),
            {},
        ),
        (
            ValueError,
            "expected `images` to have height and width at least 16, got shape (2, 16, 8, 3)",
            np.zeros((2, 16, 8, 3), np.float32),
            {"min_size": 16},
        ),
        (
            TypeError,
            "expected `images` to have a floating dtype, got uint8",
            np.zeros((2, 8, 8, 3), np.uint8),
            {},
        ),
    ]
    for exc, msg, x, kwargs in cases:
        _raises(exc, msg, checks.check_images, x, **kwargs)


# --- under jax.jit --------------------------------------------------------------------------------


def test_value_checks_are_skipped_for_tracers():
    """Bad values inside jit do not raise (a jitted function cannot raise on data)."""

    @jax.jit
    def f(x, labels, count):
        checks.check_finite(x, "x")
        checks.check_range(x, 0.0, 1.0, "x")
        checks.check_probabilities(x, "x")
        checks.check_labels_in_range(labels, 2)
        checks.check_accumulated(count, 5)
        return x

    x = jnp.asarray([NAN, 5.0])
    out = f(x, jnp.asarray([7, -1]), jnp.asarray(0))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
    # The same values outside jit are rejected.
    with pytest.raises(ValueError, match="to be finite"):
        checks.check_finite(x, "x")


def test_shape_and_dtype_checks_still_raise_under_jit():
    @jax.jit
    def rank(x):
        checks.check_rank(x, 2, "x")
        return x

    @jax.jit
    def floating(x):
        checks.check_floating(x, "x")
        return x

    _raises(ValueError, "expected `x` to have 2 dims, got shape (3,)", rank, jnp.zeros(3))
    _raises(
        TypeError,
        "expected `x` to have a floating dtype, got int32",
        floating,
        jnp.zeros(3, jnp.int32),
    )


def test_check_mask():
    np.testing.assert_array_equal(
        checks.check_mask(np.array([True, False]), 2), np.array([True, False])
    )
    np.testing.assert_array_equal(checks.check_mask(np.array([1, 0, 1]), 3), [True, False, True])
    _raises(
        ValueError,
        "expected `mask` to have shape (3,) (one per row), got (2,)",
        checks.check_mask,
        np.ones(2, bool),
        3,
    )
    _raises(
        ValueError,
        "expected `mask` to have shape (2,) (one per row), got (2, 1)",
        checks.check_mask,
        np.ones((2, 1), bool),
        2,
    )
    _raises(
        TypeError,
        "expected `mask` to have dtype bool (or integer 0/1), got float32; "
        "pass per-row weights as `sample_weight`",
        checks.check_mask,
        np.ones(2, np.float32),
        2,
    )
    _raises(
        ValueError,
        "expected `mask` to hold only 0 and 1, got 2",
        checks.check_mask,
        np.array([0, 2]),
        2,
    )
    # Under jit an integer mask cannot be checked: any nonzero value keeps its row.
    kept = jax.jit(lambda m: checks.check_mask(m, 3))(jnp.array([0, 2, 1]))
    np.testing.assert_array_equal(kept, [False, True, True])


def test_check_sample_weight():
    np.testing.assert_array_equal(checks.check_sample_weight(np.array([0.5, 0.0]), 2), [0.5, 0])
    _raises(
        ValueError,
        "expected `sample_weight` to have shape (2,) (one per row), got (3,)",
        checks.check_sample_weight,
        np.ones(3),
        2,
    )
    _raises(
        TypeError,
        "expected `sample_weight` to have a floating dtype, got int64",
        checks.check_sample_weight,
        np.ones(2, np.int64),
        2,
    )
    _raises(
        ValueError,
        "expected `sample_weight` to be >= 0, got -1",
        checks.check_sample_weight,
        np.array([1.0, -1.0]),
        2,
    )
    _raises(
        ValueError,
        "expected `sample_weight` to be finite, got 1 NaN and 0 Inf values",
        checks.check_sample_weight,
        np.array([1.0, NAN]),
        2,
    )
    # Under jit a bad weight cannot raise: it becomes NaN, which poisons the total.
    out = jax.jit(lambda w: checks.check_sample_weight(w, 3))(jnp.array([1.0, -1.0, INF]))
    assert out[0] == 1.0 and np.isnan(out[1]) and np.isnan(out[2])


def test_check_not_probabilities():
    checks.check_not_probabilities(np.array([[2.0, -1.0], [0.2, 0.3]]), "logits")
    checks.check_not_probabilities(np.zeros((0, 3)), "logits")
    _raises(
        ValueError,
        "expected `logits` to be logits (unnormalised log-probabilities), not probabilities "
        "(rows in [0, 1] summing to 1); pass their logarithm, got 1 such rows",
        checks.check_not_probabilities,
        np.array([[2.0, -1.0], [0.25, 0.75]]),
        "logits",
    )
    # Under jit the rows are recorded in the enclosing scope (see tests/core/test_jit_checks.py).
    with checks.collect() as scope:
        jax.jit(lambda x: checks.check_not_probabilities(x, "logits"))(jnp.asarray([[0.5, 0.5]]))
    assert len(scope.problems) == 1
