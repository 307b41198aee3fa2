"""The payoff table: bootstrap intervals, the oracle, and that trained heads close the gap."""

from __future__ import annotations

import re

import numpy as np
import pytest

from calibrax.learned import SyntheticTwoAFC
from calibrax.learned import TwoAFCRow
from calibrax.learned import bootstrap_interval
from calibrax.learned import format_payoff_table
from calibrax.learned import gap_closed
from calibrax.learned import per_type_2afc
from calibrax.learned.payoff import _agreement


def test_bootstrap_matches_a_hand_written_loop():
    values = np.random.default_rng(3).uniform(size=57)
    resamples, seed = 400, 11
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):  # one resample at a time, indices drawn with replacement
        idx = rng.integers(0, len(values), size=len(values))
        means.append(sum(values[i] for i in idx) / len(values))
    means = sorted(means)

    def percentile(q):  # linear interpolation between order statistics (NumPy's default)
        pos = q / 100 * (len(means) - 1)
        lo = int(np.floor(pos))
        return means[lo] + (pos - lo) * (means[min(lo + 1, len(means) - 1)] - means[lo])

    low, high = bootstrap_interval(values, resamples=resamples, seed=seed)
    assert low == pytest.approx(percentile(2.5), abs=1e-12)
    assert high == pytest.approx(percentile(97.5), abs=1e-12)


def test_bootstrap_closed_forms():
    # A constant has no spread.
    assert bootstrap_interval(np.full(30, 0.7)) == pytest.approx((0.7, 0.7))
    # Bernoulli(p) agreements: the mean of n resampled pairs is Binomial(n, p_hat) / n, whose 95%
    # interval is p_hat +- 1.96 sqrt(p_hat (1 - p_hat) / n) to O(1/n); 20000 resamples put the
    # Monte Carlo error of each percentile near 0.002.
    n, p = 400, 0.75
    values = np.r_[np.ones(int(n * p)), np.zeros(n - int(n * p))]
    half = 1.959964 * np.sqrt(p * (1 - p) / n)
    low, high = bootstrap_interval(values, resamples=20000, seed=0)
    assert low == pytest.approx(p - half, abs=0.006)
    assert high == pytest.approx(p + half, abs=0.006)
    # A wider level gives a wider interval; the same seed gives the same interval.
    low99, high99 = bootstrap_interval(values, level=0.99, resamples=20000, seed=0)
    assert low99 < low and high99 > high
    assert bootstrap_interval(values, seed=4) == bootstrap_interval(values, seed=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": np.ones((3, 2))}, "expected `values` to have 1 dims (pairs), got shape (3, 2)"),
        ({"values": np.ones(0)}, "expected `values` to be non-empty, got shape (0,)"),
        (
            {"values": np.array([1.0, np.nan])},
            "expected `values` to be finite, got 1 NaN and 0 Inf values",
        ),
        ({"level": 1.0}, "expected `level` in (0, 1), got 1.0"),
        ({"resamples": 0}, "expected `resamples` to be a positive integer, got 0"),
    ],
)
def test_bootstrap_bad_input(kwargs, message):
    args = {"values": np.ones(5), **kwargs}
    values = args.pop("values")
    with pytest.raises(ValueError, match=re.escape(message)):
        bootstrap_interval(values, **args)


def test_bootstrap_integer_values_are_rejected():
    with pytest.raises(
        TypeError, match=re.escape("expected `values` to have a floating dtype, got int64")
    ):
        bootstrap_interval(np.ones(5, np.int64))


def test_agreement_averages_to_two_afc_score():
    from calibrax.learned import two_afc_score

    rng = np.random.default_rng(0)
    d0, d1, h = rng.uniform(size=50), rng.uniform(size=50), rng.uniform(size=50)
    d1[:5] = d0[:5]  # ties score 0.5
    assert _agreement(d0, d1, h).mean() == pytest.approx(float(two_afc_score(d0, d1, h)), abs=1e-12)


def test_oracle_is_the_ceiling_of_the_judgment():
    images = [np.random.default_rng(i).integers(0, 256, (24, 24, 3), np.uint8) for i in range(2)]
    ds = SyntheticTwoAFC(60, patch_size=16, seed=2, images=images)
    levels = ds.levels()
    judge = np.array([ds[i]["judge"] for i in range(60)], np.float64)
    oracle = _agreement(levels[:, 0].astype(float), levels[:, 1].astype(float), judge)
    # Ordering by the true levels scores max(h, 1 - h) on every pair: no ordering does better.
    np.testing.assert_allclose(oracle, np.maximum(judge, 1 - judge), atol=1e-7)
    # levels() and kinds() agree with the examples they describe.
    for i in (0, 17, 59):
        expected = 1 / (1 + np.exp(-(levels[i, 0] - levels[i, 1]) / 0.5))
        assert ds[i]["judge"] == pytest.approx(expected, abs=1e-6)
    assert set(ds.kinds().ravel()) <= set(ds.distortions)
    lv = levels.astype(float)
    per_type = per_type_2afc(ds.kinds(), lv[:, 0], lv[:, 1], judge, ds.distortions)
    assert sum(n for _, n in per_type.values()) >= 60
    kinds = ds.kinds()
    blur = (kinds[:, 0] == "blur") | (kinds[:, 1] == "blur")
    assert per_type["blur"] == (pytest.approx(oracle[blur].mean()), int(blur.sum()))


def test_gap_closed_and_table_format():
    rows = [
        TwoAFCRow("oracle (true severities)", 0.9, 0.88, 0.92),
        TwoAFCRow("LPIPS untrained heads", 0.7, 0.68, 0.72),
        TwoAFCRow("LPIPS trained heads", 0.85, 0.83, 0.87),
    ]
    assert gap_closed(rows) == pytest.approx(0.75)
    text = format_payoff_table(rows)
    # Names padded to the longest ("oracle (true severities)", 24 characters) plus two spaces.
    assert "LPIPS trained heads" + " " * 7 + "0.8500  [0.8300, 0.8700]" in text
    with pytest.raises(ValueError, match=re.escape("expected a row named 'LPIPS trained heads'")):
        gap_closed(rows[:2])
    with pytest.raises(
        ValueError,
        match=re.escape("expected the oracle to beat the untrained heads, got 0.7000 <= 0.7000"),
    ):
        gap_closed([TwoAFCRow("oracle (true severities)", 0.7, 0, 1), *rows[1:]])


@pytest.mark.slow
def test_trained_heads_close_half_the_gap_and_beat_the_baselines():
    """The demo's claim in a smaller seeded setting (32-pixel patches, 160 training pairs).

    Same generator, observer judge, trunk (frozen EfficientNet-Lite0), trainer and table as the
    demo; the observer's temperature is half the median severity gap of 32-pixel pairs (0.216).
    """
    from calibrax.learned import LPIPS
    from calibrax.learned import pair_distances
    from calibrax.learned import payoff_table
    from calibrax.learned import train_lpips

    kw = {"patch_size": 32, "judge": "observer", "observer_temperature": 0.1}
    train = SyntheticTwoAFC(160, seed=0, **kw)
    val = SyntheticTwoAFC(128, seed=1, **kw)
    model = LPIPS(net="efficientnet-lite0", pretrained=False)
    before = pair_distances(model, val)[:2]
    train_lpips(model, train, epochs=5, decay_epochs=5, batch_size=32, lr=0.1, progress=False)
    rows = payoff_table(val, untrained=before, trained=pair_distances(model, val)[:2])
    scores = {r.name: r.score for r in rows}
    assert gap_closed(rows) >= 0.5, format_payoff_table(rows)
    for name in ("L2 Lab", "L2 RGB", "SSIM Lab", "SSIM RGB"):
        assert scores["LPIPS trained heads"] > scores[name], format_payoff_table(rows)
    for row in rows:
        assert row.low <= row.score <= row.high


def test_payoff_table_bad_input():
    from calibrax.learned import payoff_table

    images = [np.random.default_rng(0).integers(0, 256, (24, 24, 3), np.uint8)]
    ds = SyntheticTwoAFC(4, patch_size=16, images=images)
    ok = (np.zeros(4), np.ones(4))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `dataset` to be a SyntheticTwoAFC (the oracle needs the true severities), "
            "got list"
        ),
    ):
        payoff_table([ds[0]], untrained=ok, trained=ok)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `trained` to hold two distance vectors of shape (4,) (one per example), "
            "got shape (3,)"
        ),
    ):
        payoff_table(ds, untrained=ok, trained=(np.zeros(4), np.zeros(3)))
    with pytest.raises(ValueError, match=re.escape("expected `level` in (0, 1), got 0.0")):
        payoff_table(ds, untrained=ok, trained=ok, level=0.0)
    rows = payoff_table(ds, untrained=ok, trained=(np.ones(4), np.zeros(4)), resamples=50)
    assert [r.name for r in rows] == [
        "oracle (true severities)",
        "LPIPS untrained heads",
        "LPIPS trained heads",
        "L2 Lab",
        "L2 RGB",
        "SSIM Lab",
        "SSIM RGB",
    ]
    judge = np.array([ds[i]["judge"] for i in range(4)], np.float64)
    # d0 < d1 everywhere: each pair scores 1 - judge; the reverse scores judge.
    assert rows[1].score == pytest.approx(np.mean(1 - judge), abs=1e-6)
    assert rows[2].score == pytest.approx(np.mean(judge), abs=1e-6)
