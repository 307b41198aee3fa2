"""Worker for test_x64_off.py: runs in a fresh process with jax_enable_x64 OFF (the default of a
JAX training script) and prints the metric values as JSON. The features come from
:func:`features`, which the test calls too, so both sides see the same numbers."""

from __future__ import annotations

import json
import sys

import numpy as np

D_FID, N_FID = 2048, 3000
TARGETS = (0.01, 1.0, 100.0)


def base_features() -> np.ndarray:
    """Inception-like features: non-negative, skewed, correlated (float32, as a backbone gives)."""
    rng = np.random.default_rng(0)
    mixing = np.eye(D_FID) + rng.normal(size=(D_FID, D_FID)) * (0.5 / np.sqrt(D_FID))
    return (rng.gamma(2.0, 0.2, (N_FID, D_FID)) @ mixing).astype(np.float32)


def shifted(x: np.ndarray, target: float) -> np.ndarray:
    """``x`` scaled and shifted so that FID(x, result) is about ``target``."""
    shift = np.sqrt(target / (2 * D_FID)) / 1.8
    trace = float(np.sum(np.var(x[:500].astype(np.float64), axis=0)))
    scale = 1.0 + np.sqrt(target / (2 * trace)) / 1.8
    return (x * scale + shift).astype(np.float32)


def small_features() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    real = rng.gamma(2.0, 0.3, (300, 64)).astype(np.float32)
    fake = (rng.gamma(2.0, 0.3, (300, 64)) * 1.1 + 0.05).astype(np.float32)
    logits = (rng.normal(size=(300, 10)) * 2).astype(np.float32)
    return real, fake, logits


def main() -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from calibrax.metrics import FrechetDistance
    from calibrax.metrics import InceptionScore
    from calibrax.metrics import KernelDistance
    from calibrax.metrics import PrecisionRecall

    assert not jax.config.jax_enable_x64
    out: dict[str, object] = {"fid": [], "fid_jit": []}
    step = nnx.jit(lambda m, x, real: m.update(features=x, real=real), static_argnums=2)
    compute = nnx.jit(lambda m: m.compute())
    x = base_features()
    for target in TARGETS:
        y = shifted(x, target)
        fid = FrechetDistance(backbone=None, num_features=D_FID)  # dtype=None: float32 here
        out["dtype"] = str(fid.real_mean[...].dtype)
        for start in range(0, N_FID, 500):
            step(fid, jnp.asarray(x[start : start + 500]), True)
            step(fid, jnp.asarray(y[start : start + 500]), False)
        out["fid"].append(float(fid.compute()["frechet_distance"]))
        out["fid_jit"].append(float(compute(fid)["frechet_distance"]))
    real, fake, logits = small_features()
    kid = KernelDistance(
        backbone=None, num_features=64, max_samples=300, subsets=20, subset_size=100
    )
    prdc = PrecisionRecall(backbone=None, num_features=64, max_samples=300, k=5)
    isc = InceptionScore(backbone=None, num_classes=10, max_samples=300, splits=5)
    for metric in (kid, prdc):
        metric.update(features=real, real=True)
        metric.update(features=fake, real=False)
    isc.update(logits=logits)
    for metric in (kid, prdc, isc):
        out.update({k: float(v) for k, v in metric.compute().items()})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
