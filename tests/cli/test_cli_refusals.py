"""The command line refuses, or says, instead of printing a silently wrong number (issue 18).

Behaviour that ends before any backbone is loaded runs through the real entry point in a
subprocess (a few seconds each: the package's imports); behaviour that needs a backbone runs
``main([...])`` in-process with RandomConvBackbone (or the LPIPS ToyTrunk) swapped in, since
what is tested is what the command line decides and says, not the network.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "calibrax.cli.main"]


def run(*args, env=None):
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _error(proc_or_err) -> str:
    """The one stderr line of a failed run."""
    err = proc_or_err if isinstance(proc_or_err, str) else proc_or_err.stderr
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusals")
    rng = np.random.default_rng(0)
    for side, n in (("a", 5), ("b", 5), ("c", 7), ("two", 2), ("one", 1)):
        (root / side).mkdir()
        for i in range(n):
            arr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / side / f"{i}.png")
    (root / "broken").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "broken" / "0.png")
    for i in (1, 2):
        (root / "broken" / f"{i}.png").write_bytes(b"\x89PNG\r\n not an image")
    return root


@pytest.fixture
def cli(monkeypatch, capsys):
    """``main`` in-process with RandomConvBackbone for every backbone and the LPIPS ToyTrunk;
    returns (exit code, stdout, stderr) and the list of backbones built."""
    from flax import nnx

    import calibrax.cli.main as cli_main
    import calibrax.learned
    from calibrax.learned._toy import ToyTrunk
    from calibrax.metrics.random_backbone import RandomConvBackbone

    built = []

    def backbone(name):
        built.append(name)
        return RandomConvBackbone(rngs=nnx.Rngs(0))

    real_lpips = calibrax.learned.LPIPS
    monkeypatch.setattr(cli_main, "_backbone", backbone)
    monkeypatch.setattr(
        calibrax.learned,
        "LPIPS",
        lambda **kw: real_lpips(trunk=ToyTrunk(rngs=nnx.Rngs(0)), **kw),
    )

    def call(*argv):
        code = cli_main.main([*argv, "--no-progress"])
        out = capsys.readouterr()
        return code, out.out, out.err

    call.built = built
    return call


# A folder with too few images fails before any backbone is built (and compiled).


def test_one_image_folder_fails_before_the_backbone(folders, cli):
    a, one, broken = (str(folders / s) for s in ("a", "one", "broken"))
    for argv in (("fid", a, one), ("kid", a, one), ("fid", a, one, "--metrics", "fid,prdc")):
        code, _, err = cli(*argv)
        assert code == 1
        assert (
            _error(err) == f"calibrax: error: expected at least 2 readable images in {one!r}, got 1"
        )
    code, _, err = cli("stats", broken, "-o", str(folders / "s.npz"), "--skip-unreadable")
    assert code == 1
    assert _error(err) == (
        f"calibrax: error: expected at least 2 readable images in {broken!r}, got 1 "
        "(3 image files, 2 unreadable)"
    )
    assert cli.built == []  # no backbone was built for any of them


def test_one_image_folder_through_the_entry_point(folders):
    """With --debug the traceback shows where it stopped: in the source check that runs before
    the backbone is loaded (before the fix, after both folders had gone through it)."""
    one = str(folders / "one")
    proc = run("--debug", "fid", str(folders / "a"), one)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(f"CLIError: expected at least 2 readable images in {one!r}, got 1")
    )
    assert "in _check_sources" in proc.stderr and "_backbone" not in proc.stderr


# Errors name the command line's flags, not the library's parameters.


def test_errors_name_flags_through_the_entry_point(folders):
    a, b = str(folders / "a"), str(folders / "b")
    proc = run("kid", a, b, "--subset-size", "1")
    assert proc.returncode == 1
    assert _error(proc) == (
        "calibrax: error: expected `--subset-size` to be an integer >= 2, got 1"
    )
    proc = run("weights", "import", "resnet9000", str(folders / "a" / "0.png"))
    assert proc.returncode == 1
    assert _error(proc).startswith("calibrax: error: expected `NAME` to be one of 'alexnet', ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--subsets", "0"), "expected `--subsets` to be a positive integer, got 0"),
        (
            ("--metrics", "is", "--splits", "0"),
            "expected `--splits` to be a positive integer, got 0",
        ),
        (
            ("--metrics", "prdc", "--prdc-k", "0"),
            "expected `--prdc-k` to be a positive integer, got 0",
        ),
    ],
)
def test_collection_errors_name_flags(folders, cli, argv, message):
    code, _, err = cli("kid", str(folders / "a"), str(folders / "b"), "--subset-size", "2", *argv)
    assert code == 1
    assert _error(err) == f"calibrax: error: {message}"


def test_backbone_and_weights_errors_name_flags(folders, capsys):
    from calibrax.cli.main import main

    assert main(["fid", str(folders / "a"), str(folders / "b"), "--backbone", "resnet9000"]) == 1
    assert _error(capsys.readouterr().err).startswith(
        "calibrax: error: expected `--backbone` to be one of 'alexnet', "
    )
    assert main(["weights", "import", "alexnet", str(folders / "nope.pth")]) == 1
    assert _error(capsys.readouterr().err) == (
        f"calibrax: error: expected `PATH` to be an existing file, got {str(folders / 'nope.pth')!r}"
    )
    assert main(["weights", "import", "alexnet", str(folders / "a" / "0.png"), "--as", "a b"]) == 1
    assert _error(capsys.readouterr().err).startswith(
        "calibrax: error: expected `--as` to be a name of letters, digits"
    )
    assert main(["bench", "nope"]) == 1
    assert _error(capsys.readouterr().err).startswith(
        "calibrax: error: expected `NAME` to be one of "
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--examples", "0"), "expected `--examples` >= 1, got 0"),
        (("--val-examples", "0"), "expected `--val-examples` >= 1, got 0"),
        (("--decay-epochs", "-1"), "expected `--decay-epochs` >= 0, got -1"),
        (
            ("--epochs", "0", "--decay-epochs", "0"),
            "expected `--epochs` + `--decay-epochs` >= 1, got 0",
        ),
        (("--lr", "0"), "expected `--lr` > 0, got 0.0"),
        (
            ("--examples", "8", "--batch-size", "16"),
            "expected `--examples` to be at least `--batch-size` (16, one training step), got 8",
        ),
    ],
)
def test_train_lpips_errors_name_flags(tmp_path, cli, argv, message):
    code, _, err = cli("train-lpips", "--out", str(tmp_path / "run"), *argv)
    assert code == 1
    assert _error(err) == f"calibrax: error: {message}"
    assert not (tmp_path / "run").exists()  # refused before anything was written


# `stats -o` reports the file it wrote.


def test_stats_output_is_the_file_written(folders, tmp_path, cli):
    code, out, err = cli("stats", str(folders / "a"), "-o", str(tmp_path / "out" / "x"), "--json")
    assert code == 0, err
    written = json.loads(out)["output"]
    assert written == str(tmp_path / "out" / "x.npz")
    assert Path(written).is_file() and not (tmp_path / "out" / "x").exists()
    # The name ends in .npz, so fid reads it as a reference (a folder otherwise).
    code, out, err = cli("fid", written, str(folders / "b"), "--json")
    assert code == 0, err
    assert json.loads(out)["num_a"] == 5


# KID's subset size: said, recorded, and a std only where the subsets can differ.


def test_kid_with_fewer_images_than_the_subset_size(folders, cli):
    a, b, c = (str(folders / s) for s in ("a", "b", "c"))
    code, out, err = cli("kid", a, c, "--json")
    assert code == 0, err
    note = (
        f"KID subsets of 2 images: half the 5 in {a!r}, which holds fewer than the default 1000 "
        "(pass --subset-size to choose)"
    )
    assert err.strip() == f"calibrax: note: {note}"
    got = json.loads(out)
    assert got["kid_subset_size"] == 2 and got["kid_note"] == note
    assert got["kid_std"] > 0.0  # 100 subsets of 2 out of 5 and 7: they differ

    two = str(folders / "two")
    code, out, err = cli("kid", two, c, "--json")
    assert code == 0, err
    note = (
        f"KID subsets of 2 images: the fewest KID takes; {two!r} holds 2, fewer than the default "
        "1000 (pass --subset-size to choose)"
    )
    assert err.strip() == f"calibrax: note: {note}"
    assert json.loads(out)["kid_note"] == note and json.loads(out)["kid_std"] > 0.0

    # Every subset the whole of both sides: the std is 0 by construction, so it is unknown.
    code, out, err = cli("kid", a, b, "--subset-size", "5", "--json")
    assert code == 0, err
    unknown = (
        "kid_std is unknown: every subset holds all the images of both sides (5), so the subsets "
        "cannot differ and their std is 0 by construction; pass --subsets of at least 2 and a "
        "--subset-size below a side's image count for a spread"
    )
    assert err.strip() == f"calibrax: note: {unknown}"
    got = json.loads(out)
    assert got["kid_std"] is None and got["kid_note"] == unknown and got["kid_subset_size"] == 5
    code, out, _ = cli("kid", a, b, "--subset-size", "5")
    assert code == 0 and "kid_std: unknown" in out.splitlines()
    # One side larger than the subsets: those draws differ, so the std is reported.
    code, out, err = cli("kid", a, c, "--subset-size", "5", "--json")
    assert code == 0 and err == ""
    assert json.loads(out)["kid_std"] > 0.0 and "kid_note" not in json.loads(out)


def test_kid_subset_size_larger_than_a_side_is_refused_as_the_python_metric_does(folders):
    import jax.numpy as jnp

    from calibrax.metrics import KernelDistance

    a, c = str(folders / "a"), str(folders / "c")
    proc = run("kid", c, a, "--subset-size", "7")
    assert proc.returncode == 1
    assert _error(proc) == (
        f"calibrax: error: expected `--subset-size` to be at most the number of images of each "
        f"side, got 7 with 5 in {a!r}; pass --subset-size 2 (half the smaller side, so that the "
        "subsets differ), or leave it out for that"
    )
    metric = KernelDistance(backbone=None, num_features=3, max_samples=8, subset_size=7)
    metric.update(features=jnp.ones((7, 3)), real=True)
    metric.update(features=jnp.ones((5, 3)), real=False)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `subset_size` to be at most the number of fake samples (5), got 7"
        ),
    ):
        metric.compute()


# lpips: missing weights say how to get them; a trunk without official heads needs --heads.


def test_lpips_without_weights_or_heads_says_what_to_do(tmp_path):
    home = tmp_path / "home"
    missing = str(tmp_path / "not-read.png")  # refused before any image is read
    proc = run("lpips", missing, missing, env={"CALIBRAX_HOME": str(home)})
    assert proc.returncode == 1
    assert _error(proc) == (
        "calibrax: error: expected the alexnet weights for the trunk of --net alex (the default) "
        f"in the calibrax cache at {str(home / 'weights' / 'alexnet')!r}, got none; import the "
        "file alexnet-owt-7be5be79.pth (from torchvision model zoo, "
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth) once with: calibrax "
        "weights import alexnet /path/to/alexnet-owt-7be5be79.pth, or pass --net "
        "efficientnet-lite0 (its trunk ships with calibrax) with --heads from `calibrax "
        "train-lpips`"
    )
    proc = run("lpips", missing, missing, "--net", "efficientnet-lite0")
    assert proc.returncode == 1
    assert _error(proc) == (
        "calibrax: error: expected `--heads` with --net efficientnet-lite0 (LPIPS has official "
        "heads only for alex, vgg, squeeze; untrained heads give an uncalibrated distance), got "
        "none; train heads with `calibrax train-lpips --net efficientnet-lite0 --out DIR` and "
        "pass --heads DIR/heads"
    )


def test_lpips_without_the_lpips_package_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import importlib.util

    from calibrax.cli.main import main
    from calibrax.io import weights

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lpips" else find_spec(name, *a),
    )
    present = [dict(r, present=True) for r in weights.weights_status()]
    monkeypatch.setattr(weights, "weights_status", lambda: present)
    assert main(["lpips", "x.png", "y.png", "--net", "vgg"]) == 1
    assert _error(capsys.readouterr().err) == (
        "calibrax: error: expected the `lpips` package for the official LPIPS heads of --net vgg, "
        "got it not installed; install it with: pip install --no-deps lpips==0.1.4 (calibrax "
        "reads its heads files without torch), or pass --heads from `calibrax train-lpips`"
    )


# train-lpips into an existing --out: the same settings resume, others are refused.

TOY_RUN = (
    *("--examples", "16", "--val-examples", "16", "--patch-size", "16"),
    *("--epochs", "1", "--decay-epochs", "0", "--batch-size", "16", "--judge", "levels"),
)


def test_train_lpips_resumes_only_with_the_same_settings(tmp_path, cli, monkeypatch):
    import calibrax.learned
    from calibrax.cli.main import _record_or_match_run
    from calibrax.cli.main import build_parser

    def stop(*args, **kwargs):
        raise RuntimeError("stopped after the settings were recorded")

    # The run itself is not what is tested (tests/cli/test_cli.py trains through the CLI, and
    # tests/learned/test_training.py resumes): it stops once its settings are on disk.
    monkeypatch.setattr(calibrax.learned, "SyntheticTwoAFC", stop)
    out = str(tmp_path / "run")
    code, _, err = cli("train-lpips", *TOY_RUN, "--out", out)
    assert code == 1 and "stopped after the settings were recorded" in err
    recorded = (tmp_path / "run" / "settings.json").read_text()
    assert json.loads(recorded) == {
        "net": "efficientnet-lite0",
        "examples": 16,
        "val_examples": 16,
        "patch_size": 16,
        "epochs": 1,
        "decay_epochs": 0,
        "lr": 0.05,
        "tune": False,
        "trunk_lr": None,
        "judge": "levels",
        "seed": 0,
        "batch_size": 16,
    }
    # The same settings pass (and go on to resume); the recorded settings stay as they were.
    _record_or_match_run(build_parser().parse_args(["train-lpips", *TOY_RUN]), Path(out))
    assert (tmp_path / "run" / "settings.json").read_text() == recorded

    fresh = f"pass the same settings to resume, or a new --out (or delete {out!r}) to start fresh"
    code, _, err = cli("train-lpips", *TOY_RUN, "--lr", "0.01", "--out", out)
    assert code == 1
    assert _error(err) == (
        f"calibrax: error: expected the settings of the train-lpips run in {out!r} to resume it, "
        f"got --lr 0.01 where that run used --lr 0.05; {fresh}"
    )
    code, _, err = cli("train-lpips", *TOY_RUN, "--tune", "--out", out)
    assert code == 1
    assert "got --tune where that run used no --tune; " in _error(err)

    proc = run("train-lpips", *TOY_RUN, "--seed", "3", "--out", out)
    assert proc.returncode == 1
    assert _error(proc) == (
        f"calibrax: error: expected the settings of the train-lpips run in {out!r} to resume it, "
        f"got --seed 3 where that run used --seed 0; {fresh}"
    )
    # Checkpoints of a run that recorded no settings (an older calibrax) cannot be matched.
    (tmp_path / "run" / "settings.json").unlink()
    (tmp_path / "run" / "checkpoints" / "1").mkdir(parents=True)
    code, _, err = cli("train-lpips", *TOY_RUN, "--out", out)
    assert code == 1
    assert _error(err) == (
        f"calibrax: error: expected {str(tmp_path / 'run' / 'settings.json')!r} beside the "
        f"checkpoints of the train-lpips run in {out!r} (the settings to resume it with), got "
        f"none; pass a new --out (or delete {out!r}) to start fresh"
    )


def test_inception_score_splits_and_prdc_k_are_not_cut_silently(folders, cli):
    # Before: --splits was cut to the generated count and --prdc-k to (larger side - 1), silently.
    a, c = str(folders / "a"), str(folders / "c")
    code, out, err = cli("fid", a, c, "--metrics", "is,prdc", "--json")
    assert code == 0, err
    is_note = (
        f"Inception Score over 3 splits: {c!r} holds 7 images, fewer than the 20 that the default "
        "10 splits of at least 2 take (pass --splits to choose)"
    )
    prdc_note = (
        f"PRDC with k = 4 neighbours: {a!r} holds 5 images, and k must be below a side's count "
        "(default 5; pass --prdc-k to choose)"
    )
    assert err.strip().splitlines() == [
        f"calibrax: note: {is_note}",
        f"calibrax: note: {prdc_note}",
    ]
    got = json.loads(out)
    assert (got["is_splits"], got["is_note"]) == (3, is_note)
    assert (got["prdc_k"], got["prdc_note"]) == (4, prdc_note)
    # Values the images support are used as given, without a note.
    code, out, err = cli("fid", a, c, "--metrics", "is,prdc", "--splits", "7", "--prdc-k", "4")
    assert code == 0 and err == ""
    assert "is_splits: 7" in out.splitlines() and "prdc_k: 4" in out.splitlines()
    # Values they cannot support are refused, naming the flag.
    code, _, err = cli("fid", a, c, "--metrics", "is", "--splits", "8")
    assert code == 1
    assert _error(err) == (
        f"calibrax: error: expected `--splits` to be at most the number of generated images, got "
        f"8 with 7 in {c!r}"
    )
    code, _, err = cli("fid", a, c, "--metrics", "prdc", "--prdc-k", "5")
    assert code == 1
    assert _error(err) == (
        f"calibrax: error: expected `--prdc-k` to be less than the number of images of each side, "
        f"got 5 with 5 in {a!r}"
    )
