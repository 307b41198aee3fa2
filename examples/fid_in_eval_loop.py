"""FID and KID inside a training loop: a small Flax NNX autoencoder on scikit-learn's digits.

The real statistics are computed once (``reset_real_features=False`` keeps them across
``reset()``), and every ``--eval-every`` steps the current reconstructions of a fixed held-out set
are fed through a jitted update on the embedded EfficientNet-Lite0 backbone. Digits are 8x8
grayscale: they are upscaled to 32x32 RGB before the backbone (which resizes to 224x224 itself).
The curves of loss, Fréchet distance and KID go to a PNG.

Usage: ``python examples/fid_in_eval_loop.py [--steps 300] [--eval-every 50] [--out DIR]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # FID statistics are float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from calibrax.backbones import load  # noqa: E402
from calibrax.metrics import FrechetDistance  # noqa: E402
from calibrax.metrics import KernelDistance  # noqa: E402


class AutoEncoder(nnx.Module):
    def __init__(self, *, latent: int = 8, rngs: nnx.Rngs):
        self.enc0 = nnx.Linear(64, 64, rngs=rngs)
        self.enc1 = nnx.Linear(64, latent, rngs=rngs)
        self.dec0 = nnx.Linear(latent, 64, rngs=rngs)
        self.dec1 = nnx.Linear(64, 64, rngs=rngs)

    def __call__(self, x):
        z = self.enc1(jax.nn.relu(self.enc0(x)))
        return jax.nn.sigmoid(self.dec1(jax.nn.relu(self.dec0(z))))


def to_images(flat: jax.Array) -> jax.Array:
    """(n, 64) in [0, 1] -> (n, 32, 32, 3) uint8, nearest-neighbour upscaling."""
    img = jnp.repeat(jnp.repeat(flat.reshape(-1, 8, 8, 1), 4, axis=1), 4, axis=2)
    img = jnp.repeat(img, 3, axis=3)
    return jnp.round(jnp.clip(img, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-size", type=int, default=128)
    parser.add_argument("--out", default="fid_eval_loop")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = (load_digits().data / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(data))
    train, held = (
        jnp.asarray(data[perm[:1400]]),
        jnp.asarray(data[perm[1400 : 1400 + args.eval_size]]),
    )

    backbone = load("efficientnet-lite0")
    fid = FrechetDistance(backbone=backbone, reset_real_features=False)
    kid = KernelDistance(
        backbone=backbone,
        max_samples=args.eval_size,
        subsets=20,
        subset_size=args.eval_size // 2,
        reset_real_features=False,
    )
    update = nnx.jit(lambda m, x, real: m.update(images=x, real=real), static_argnums=2)
    for i in range(0, args.eval_size, 32):
        batch = to_images(held[i : i + 32])
        update(fid, batch, True)
        update(kid, batch, True)

    model = AutoEncoder(rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, xb):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xb) - xb) ** 2))(model)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32
            opt.update(model, grads)
        return loss

    history = {"step": [], "loss": [], "fid": [], "kid": []}
    rng = np.random.default_rng(1)
    for s in range(1, args.steps + 1):
        idx = rng.choice(train.shape[0], 128, replace=False)
        loss = step(model, opt, train[idx])
        if s % args.eval_every == 0 or s == 1:
            fid.reset()
            kid.reset()
            recon = model(held)
            for i in range(0, args.eval_size, 32):
                batch = to_images(recon[i : i + 32])
                update(fid, batch, False)
                update(kid, batch, False)
            f = float(fid.compute()["frechet_distance"])
            k = float(kid.compute()["kid_mean"])
            for key, v in (("step", s), ("loss", float(loss)), ("fid", f), ("kid", k)):
                history[key].append(v)
            print(
                f"step {s:4d}  loss {float(loss):.4f}  Fréchet distance {f:8.3f}  KID {k:.4f}",
                flush=True,
            )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, title in zip(
        axes,
        ("loss", "fid", "kid"),
        ("reconstruction MSE", "Fréchet distance (EfficientNet-Lite0)", "KID"),
        strict=True,
    ):
        ax.plot(history["step"], history[key], marker="o")
        ax.set(xlabel="step", title=title)
    fig.tight_layout()
    fig.savefig(out / "fid_eval_loop.png", dpi=100)
    print(f"curves written to {out / 'fid_eval_loop.png'}")


if __name__ == "__main__":
    main()
