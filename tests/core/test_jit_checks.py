"""Value checks that survive ``jit``: bad input ends in an error or NaN, never a plausible number.

The mechanism is described in :mod:`calibrax.core.checks`. Eagerly a value check raises; under a
transformation it records which rows broke its rule, a pure function then returns NaN and a
stateful metric counts the rows so that ``compute()`` raises (eagerly) or returns NaN (traced).

First the cases of issue 18, each of which gave a plausible number before; then every eager value
check, enumerated: NaN in a row of each stateful metric (every registered one, the cases of
``tests/metrics/test_masks.py``) and in the first argument of every registered function, and one
case per range, probability, label and logit rule.
"""

from __future__ import annotations

import ast
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import calibrax
from calibrax.core import checks
from calibrax.core.registry import list_entries
from calibrax.functional import expected_calibration_error
from calibrax.functional import inception_score
from calibrax.functional import psnr
from calibrax.learned import LPIPS
from calibrax.learned import LPIPSMetric
from calibrax.learned._toy import ToyTrunk
from calibrax.metrics import FrechetDistance
from calibrax.metrics import InceptionScore
from calibrax.metrics import StreamingAccuracy
from calibrax.metrics import StreamingExpectedCalibrationError
from calibrax.metrics import StreamingPSNR
from calibrax.metrics.random_backbone import RandomConvBackbone
from tests.metrics.test_masks import CASES
from tests.metrics.test_masks import TWO_SIDED

JIT = " in updates traced under jit (their values are not visible there)"


def _msg(rule: str, rows: int) -> str:
    return re.escape(f"{rule}, got {rows} rejected row{'s' if rows != 1 else ''}{JIT}")


def _all_nan(out) -> bool:
    """Every floating output NaN and every integer output -1 (the traced verdict)."""
    leaves = [jnp.asarray(x) for x in jax.tree.leaves(out)]
    floats = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    ints = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.signedinteger)]
    return bool(floats or ints) and all(
        [bool(jnp.all(jnp.isnan(x))) for x in floats] + [bool(jnp.all(x == -1)) for x in ints]
    )


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------------- the cases
def _fid():
    return FrechetDistance(
        backbone=RandomConvBackbone(input_size=(16, 16), rngs=nnx.Rngs(0)), normalize=True
    )


# The README's jitted update, with one compiled program per side.
_readme_update = nnx.jit(lambda m, x, real: m.update(images=x, real=real), static_argnums=2)


@pytest.mark.parametrize("scale", ["[-1, 1]", "[0, 255]"])
def test_fid_normalize_out_of_range_under_readme_jit(rng, scale):
    real = jnp.asarray(rng.random((8, 16, 16, 3)), jnp.float32)
    fake01 = jnp.asarray(rng.random((8, 16, 16, 3)), jnp.float32)
    fake = 2.0 * fake01 - 1.0 if scale == "[-1, 1]" else 255.0 * fake01
    fid = _fid()
    _readme_update(fid, real, True)
    _readme_update(fid, fake, False)
    rule = "expected `images` to be in [0, 1] (normalize=True expects floats in [0, 1])"
    with pytest.raises(ValueError, match=_msg(rule, 8)):
        fid.compute()
    assert _all_nan(nnx.jit(lambda m: m.compute())(fid))
    # The same images in range give a finite number through the same compiled update.
    ok = _fid()
    _readme_update(ok, real, True)
    _readme_update(ok, fake01, False)
    assert np.isfinite(float(ok.compute()["frechet_distance"]))


def test_ece_of_logits_and_bad_labels_under_jit_is_nan(rng):
    logits = jnp.asarray(3.0 * rng.normal(size=(64, 10)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 64), jnp.int32)
    probs = jax.nn.softmax(logits)
    ece = jax.jit(expected_calibration_error)
    np.testing.assert_allclose(ece(probs, labels), expected_calibration_error(probs, labels))
    assert np.isnan(ece(logits, labels))
    assert np.isnan(ece(probs, labels.at[3].set(99)))


def test_lpips_on_0_255_floats_under_jit_is_nan(rng):
    model = LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)
    x = jnp.asarray(rng.random((3, 16, 16, 3)), jnp.float32) * 2.0 - 1.0
    y = jnp.asarray(rng.random((3, 16, 16, 3)), jnp.float32) * 2.0 - 1.0
    run = nnx.jit(lambda m, a, b: m(a, b))
    assert np.all(np.isfinite(run(model, x, y)))
    bad = run(model, x.at[1].set(127.5 * (x[1] + 1.0)), y)
    # Per-pair distances: only the bad pair is NaN.
    assert np.isnan(bad[1]) and np.all(np.isfinite(bad[jnp.array([0, 2])]))
    metric = LPIPSMetric(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)
    nnx.jit(lambda m, a, b: m.update(predictions=a, targets=b))(metric, 127.5 * (x + 1.0), y)
    with pytest.raises(
        ValueError, match=_msg("expected `x` to be in [-1, 1] (normalize=False)", 3)
    ):
        metric.compute()


def test_psnr_with_wrong_data_range_under_jit(rng):
    target = jnp.asarray(255.0 * rng.random((4, 8, 8, 3)), jnp.float32)
    pred = jnp.clip(target + jnp.asarray(rng.normal(size=target.shape), jnp.float32), 0, 255)
    assert np.isnan(jax.jit(lambda a, b: psnr(a, b, data_range=1.0))(pred, target))
    assert np.isfinite(jax.jit(lambda a, b: psnr(a, b, data_range=255.0))(pred, target))
    metric = StreamingPSNR(data_range=1.0)
    nnx.jit(lambda m, a, b: m.update(predictions=a, targets=b))(metric, pred, target)
    rule = "expected `predictions` to be in [0, 1] (data_range=1.0)"
    with pytest.raises(ValueError, match=_msg(rule, 4)):
        metric.compute()


def test_inception_score_given_probabilities_for_logits(rng):
    logits = jnp.asarray(3.0 * rng.normal(size=(16, 5)), jnp.float32)
    probs = jax.nn.softmax(logits)
    rule = (
        "expected `logits` to be logits (unnormalised log-probabilities), not probabilities "
        "(rows in [0, 1] summing to 1); pass their logarithm"
    )
    eager = InceptionScore(backbone=None, num_classes=5, max_samples=16, splits=2)
    with pytest.raises(ValueError, match=re.escape(f"{rule}, got 16 such rows")):
        eager.update(logits=probs)
    metric = InceptionScore(backbone=None, num_classes=5, max_samples=16, splits=2)
    nnx.jit(lambda m, x: m.update(logits=x))(metric, probs)
    with pytest.raises(ValueError, match=_msg(rule, 16)):
        metric.compute()
    # Real logits (and their log-softmax, which are logits too) are accepted.
    for ok in (logits, jax.nn.log_softmax(logits)):
        good = InceptionScore(backbone=None, num_classes=5, max_samples=16, splits=2)
        nnx.jit(lambda m, x: m.update(logits=x))(good, ok)
        assert np.isfinite(float(good.compute()["inception_score_mean"]))
    # The functional score takes probabilities, and under jit refuses logits with NaN.
    assert np.isnan(jax.jit(lambda p: inception_score(p, splits=2)[0])(logits))


# ------------------------------------------------------- the mechanism: counts, masks, merging
def _acc_update(m, p, t, keep):
    m.update(predictions=p, targets=t, mask=keep)


_acc_step = nnx.jit(_acc_update)


def test_masked_rows_are_never_counted_and_state_merges(rng):
    p = jnp.asarray(rng.random((6, 4)), jnp.float32)
    t = jnp.asarray([0, 1, 2, 3, 99, -1], jnp.int32)
    keep = jnp.asarray([True, True, True, True, False, False])
    clean = StreamingAccuracy()
    _acc_step(clean, p, t, keep)
    assert int(clean.rejected_rows[...]) == 0
    bad = StreamingAccuracy()
    _acc_step(bad, p, t, jnp.asarray([True, True, True, True, True, False]))
    assert int(bad.rejected_rows[...]) == 1
    rule = "expected `targets` to be in [0, 3] (num_classes=4)"
    clean.merge(bad)
    with pytest.raises(ValueError, match=_msg(rule, 1)):
        clean.compute()
    clean.reset()
    assert int(clean.rejected_rows[...]) == 0 and int(clean.rejected_rule[...]) == 0
    _acc_step(clean, p, t, keep)
    assert np.isfinite(float(clean.compute()["accuracy"]))


def test_rejected_state_survives_split_and_jax_jit(rng):
    metric = StreamingExpectedCalibrationError(n_bins=5)
    graphdef, state = nnx.split(metric)

    @jax.jit
    def step(state, p, t):
        m = nnx.merge(graphdef, state)
        m.update(predictions=p, targets=t)
        return nnx.state(m)

    p = jnp.asarray(rng.random((8, 3)) * 2.0, jnp.float32)  # rows do not sum to 1
    nnx.update(metric, step(state, p, jnp.zeros(8, jnp.int32)))
    with pytest.raises(ValueError, match=re.escape("expected `predictions` to be in [0, 1], got")):
        metric.compute()


# --------------------------------------------------------- every eager check, enumerated
def _batch(name, rng, n=8):
    factory, make = CASES[name]
    arrays = {k: jnp.asarray(v) for k, v in make(rng, n).items()}
    arrays = {
        k: v.astype(jnp.float32) if jnp.issubdtype(v.dtype, jnp.floating) else v
        for k, v in arrays.items()
    }
    return factory, arrays


def _first_float(arrays):
    return next(k for k, v in arrays.items() if jnp.issubdtype(v.dtype, jnp.floating))


# A traced compute goes through the one base-class wrapper: compiled for a sample of metrics only
# (a sum/count, an integer confusion matrix, a Chan-merged Gaussian, a buffer), to keep the suite
# fast.
TRACED_COMPUTE = {
    "StreamingAccuracy",
    "StreamingConfusionMatrix",
    "FrechetDistance",
    "KernelDistance",
}


@pytest.mark.slow  # ~30 compiled updates: the sweep; the rule families below stay fast
@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_row_in_every_stateful_metric(name, rng):
    factory, arrays = _batch(name, rng)
    key = _first_float(arrays)
    bad = dict(arrays, **{key: arrays[key].at[2].set(jnp.nan)})
    static = {"real": False} if name in TWO_SIDED else {}
    eager = factory()
    with pytest.raises(ValueError, match="to be finite"):
        eager.update(**bad, **static)
    metric = factory()
    if name in TWO_SIDED:
        metric.update(**arrays, real=True)
    nnx.jit(lambda m, kw: m.update(**kw, **static))(metric, bad)
    assert int(metric.rejected_rows[...]) == 1
    with pytest.raises(ValueError, match=r"to be finite, got 1 rejected row in updates traced"):
        metric.compute()
    if name in TRACED_COMPUTE:
        assert _all_nan(nnx.jit(lambda m: m.compute())(metric))


def _corrupt(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return x.reshape(-1).at[0].set(jnp.nan).reshape(x.shape)
    return x.reshape(-1).at[0].set(10**6).reshape(x.shape)


FUNCTIONS = sorted(
    e.name for e in list_entries() if e.kind in ("function", "statistic") and e.example
)


@pytest.mark.slow  # ~40 compiled functions: the sweep
@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_registered_function_gives_nan_for_traced_bad_input(name):
    """A NaN (or out-of-range integer) in the first argument: under ``jax.jit`` NaN in every
    floating output (-1 in integer ones), never a number. (Eagerly the same input raises: the
    eager checks have their own tests next to each function.)"""
    entry = next(e for e in list_entries() if e.name == name)
    fn, args = entry.example()
    jitted = jax.jit(fn)(_corrupt(args[0]), *args[1:])
    leading = jnp.shape(args[0])[:1]
    if isinstance(jitted, jax.Array) and jitted.ndim >= 1 and jitted.shape[:1] == leading:
        # One output row per input row (e.g. per-pair distances): the corrupted row 0 is NaN.
        assert _all_nan(jitted[0]), f"{name}: jit gave {jitted}"
    else:
        assert _all_nan(jitted), f"{name}: jit gave {jitted}"


# One case per rule of each value-check family on a stateful metric: range, probabilities,
# labels (the NaN rule is covered above for every metric).
RULES = {
    "range (StreamingPSNR data_range)": (
        lambda: StreamingPSNR(data_range=(0.0, 1.0)),
        lambda r: {"predictions": r.random((4, 6, 6, 3)) * 2, "targets": r.random((4, 6, 6, 3))},
        "expected `predictions` to be in [0, 1] (data_range=(0.0, 1.0))",
        4,
    ),
    "probabilities sum (StreamingECE)": (
        lambda: StreamingExpectedCalibrationError(n_bins=5),
        lambda r: {"predictions": np.full((4, 4), 0.2), "targets": np.arange(4) % 4},
        "expected `predictions` to sum to 1 along axis -1 (atol 0.0001)",
        4,
    ),
    "labels (StreamingAccuracy)": (
        StreamingAccuracy,
        lambda r: {"predictions": r.random((4, 3)), "targets": np.array([0, 1, 7, 2])},
        "expected `targets` to be in [0, 2] (num_classes=3)",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(RULES))
def test_every_rule_family_fails_loudly_under_jit(case, rng):
    factory, make, rule, rows = RULES[case]
    arrays = {
        k: jnp.asarray(v, jnp.float32 if np.asarray(v).dtype.kind == "f" else jnp.int32)
        for k, v in make(rng).items()
    }
    with pytest.raises(ValueError, match=re.escape(rule)):
        factory().update(**arrays)
    metric = factory()
    nnx.jit(lambda m, kw: m.update(**kw))(metric, arrays)
    with pytest.raises(ValueError, match=_msg(rule, rows)):
        metric.compute()


VALUE_CHECKS = {
    "check_finite",
    "check_range",
    "check_probabilities",
    "check_labels_in_range",
    "check_not_probabilities",
}


def test_every_value_check_site_is_guarded():
    """Each call of a value check sits in a function that some guard covers: a registered or
    ``nan_if_invalid`` function, a ``StatefulMetric`` update, or a helper listed here with the
    guarded entry points that call it."""
    helpers = {
        # module: functions whose callers are guarded entry points (checked through them above)
        "functional/image.py": {"validate_images"},
        "functional/classification.py": {"_check_predictions", "_check_probabilistic"},
        "functional/calibration.py": {"_check_logits"},
        "functional/fid.py": {"_check_gaussian_values", "check_feature_sets"},
        "functional/inception_score.py": {"inception_score"},
        "functional/regression.py": {"_check_regression"},
        "functional/retrieval.py": {"_validate_embeddings"},
        "backbones/inception.py": {"_check"},
        "backbones/efficientnet_lite.py": {"_check"},
        "metrics/inception_score.py": {"update"},
        "metrics/retrieval.py": {"update"},
        "metrics/frozen_backbone.py": {"_prepared", "_check_features"},
        "metric_learning/losses/_weight_losses.py": {"validate_inputs"},
        "metric_learning/losses/margin.py": {"validate_inputs"},
        "learned/evaluation.py": {"_check_1d", "two_afc_score", "jnd_map"},
        "learned/calibration.py": {"_check"},
        "learned/lpips.py": {"_validate"},
        # Merged with the checks: each helper's callers are guarded as described.
        "functional/cmmd.py": {"check_embedding_sets"},  # `cmmd` (a registered statistic)
        "backbones/dinov2.py": {"_check"},  # DINOv2.__call__ / forward (nan_if_invalid)
        "backbones/clip.py": {"_check"},  # CLIP image tower __call__ / forward (nan_if_invalid)
        "learned/baselines.py": {"baseline_distance"},  # a registered function
        "learned/dists.py": {"_validate"},  # DISTS.__call__: NaN per invalid pair under jit
        "learned/payoff.py": {"bootstrap_interval"},  # numpy on the host, always eager
        "metric_learning/accuracy_calculator.py": {"_check_embeddings"},  # host-side, eager
        "metric_learning/clustering.py": {"kmeans"},  # called eagerly by AccuracyCalculator
        "metric_learning/base.py": {"validate_embeddings_and_labels", "prepare_inputs"},
        "metric_learning/losses/_standard_call.py": {"_check_embeddings"},  # NaN-guarded call
        "metric_learning/losses/manifold.py": {"validate_full"},  # under the loss's guard
        "metric_learning/regularizers/base_regularizer.py": {"__call__"},  # NaN for NaN input
    }
    root = pathlib.Path(calibrax.__file__).parent
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("core/", "learning/")):
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in VALUE_CHECKS
                ):
                    found.setdefault(rel, set()).add(fn.name)
    unlisted = {k: v - helpers.get(k, set()) for k, v in found.items()}
    assert not {k: v for k, v in unlisted.items() if v}, unlisted


def test_require_outside_a_scope_and_concrete_flags_record_nothing():
    with checks.collect() as scope:
        checks.require(jnp.asarray([True, False]), "rule")  # concrete: the caller raises
    assert scope.problems == []
    checks.require(jnp.asarray(False), "rule")  # no scope: nothing to do


def test_rule_codes_are_stable_and_named():
    code = checks.rule_code("expected `x` to be finite")
    assert code == checks.rule_code("expected `x` to be finite") > 0
    assert checks.rule_of(code) == "expected `x` to be finite"
    assert checks.rule_of(12345) == "rule #12345 (traced in another process)"
