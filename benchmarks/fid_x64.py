"""FID without process-wide x64 against FID with it: update and finalize, d = 2048.

x64 is a process-wide switch, so each side runs in its own child process (same script,
``--child on|off``) on the same features:

- update: 20 jitted (donated) ``FrechetDistance(dtype=None)`` updates of 256 x 2048 float32
  features: float32 statistics with x64 off, float64 with it on;
- finalize: ``compute()`` on the statistics of 5120 + 5120 features: with x64 off the closed form
  runs in float64 on the host (numpy), with x64 on in float64 through XLA.

Prints a markdown table, then one JSON line per row with ``benchmark``, ``ours_s`` (x64 off, the
training-script default), ``reference_s`` (x64 on) and ``ratio`` (reference / ours), plus the two
FID values (they agree to float32 rounding).

Usage: ``python benchmarks/fid_x64.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def child(mode: str, d: int, batches: int, runs: int) -> None:
    import jax

    jax.config.update("jax_enable_x64", mode == "on")
    import jax.numpy as jnp
    import numpy as np
    from _timing import median_time
    from flax import nnx

    from calibrax.metrics import FrechetDistance

    rng = np.random.default_rng(0)
    feats = [jnp.asarray(rng.gamma(2.0, 0.2, (256, d)).astype(np.float32)) for _ in range(batches)]
    step = nnx.jit(
        lambda m, x, real: m.update(features=x, real=real), static_argnums=2, donate_argnums=0
    )
    fid = FrechetDistance(backbone=None, num_features=d)

    def updates():
        for x in feats:
            step(fid, x, False)
        jax.block_until_ready(nnx.state(fid))

    update_s = median_time(updates, runs)
    for x in feats:
        step(fid, x * 1.01, True)

    def finalize():
        return jax.block_until_ready(fid.compute()["frechet_distance"])

    finalize_s = median_time(finalize, runs)
    print(
        json.dumps(
            {"update_s": update_s, "finalize_s": finalize_s, "fid": float(finalize()), "mode": mode}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 512")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=("on", "off"))
    args = parser.parse_args()
    d, batches = (512, 10) if args.quick else (2048, 20)
    if args.child:
        child(args.child, d, batches, args.runs)
        return
    out = {}
    for mode in ("off", "on"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--runs", str(args.runs)]
            + (["--quick"] if args.quick else []),
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"},
        )
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [
        (f"fid_update_x64_off_vs_on_d{d}_{batches}x256", "update_s"),
        (f"fid_finalize_x64_off_host_vs_on_d{d}", "finalize_s"),
    ]
    print(
        f"FID x64 off (float32 state, host float64 finalize) vs x64 on (float64), d = {d}, "
        f"median of {args.runs} runs; FID off {out['off']['fid']:.8g}, on {out['on']['fid']:.8g}"
    )
    print()
    print("| benchmark | x64 off (s) | x64 on (s) | ratio |")
    print("|---|---|---|---|")
    for name, key in rows:
        off, on = out["off"][key], out["on"][key]
        print(f"| {name} | {off:.4g} | {on:.4g} | {on / off:.3g}x |")
    print()
    for name, key in rows:
        off, on = out["off"][key], out["on"][key]
        print(json.dumps({"benchmark": name, "ours_s": off, "reference_s": on, "ratio": on / off}))


if __name__ == "__main__":
    main()
