"""InceptionV3-FID fed as each reference tool feeds it: pytorch-fid scales [0, 1] pixels by
``2u - 1``; clean-fid and torch-fidelity (torchmetrics) keep the TF graph's ``(x - 128) / 128``
on [0, 255] pixels. With ``--like TOOL`` the CLI sets both the resize mode and this scaling."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from calibrax.backbones import InceptionV3FID
from calibrax.backbones.inception import REFERENCE_TOOLS
from calibrax.cli import main as cli

REFERENCE_SRC = Path(sys.prefix) / "reference-src"


@pytest.fixture(scope="module")
def inception():
    return InceptionV3FID()  # zero placeholders: only the input scaling is exercised here


def test_tf_scaling_is_the_tf_graphs_and_pytorch_fids_is_2u_minus_1(inception):
    x = np.arange(256, dtype=np.float32)  # every uint8 value
    u = jnp.asarray(x / 255.0)
    np.testing.assert_allclose(inception._scaled(u), 2 * x / 255 - 1, atol=1e-6)
    inception.input_scaling = "tf"
    try:
        np.testing.assert_allclose(inception._scaled(u), (x - 128) / 128, atol=1e-6)
    finally:
        inception.input_scaling = "pytorch-fid"
    with pytest.raises(ValueError, match=re.escape("expected `input_scaling` to be one of")):
        InceptionV3FID(input_scaling="clean")


def _source(package: str, name: str) -> str:
    beside = REFERENCE_SRC / package / name
    path = beside if beside.exists() else None
    if path is None:
        spec = importlib.util.find_spec(package)
        if spec is None:
            pytest.skip(f"{package} is installed by `make venv`")
        path = Path(spec.submodule_search_locations[0]) / name
    return " ".join(path.read_text().split())


def test_the_reference_tools_scale_as_stated():
    assert "x = (x - 128) / 128" in _source("torch_fidelity", "feature_extractor_inceptionv3.py")
    clean = _source("cleanfid", "inception_torchscript.py")
    assert "x1 = x - 128" in clean and "x2 = x1 / 128" in clean


def _args(**kw):
    return argparse.Namespace(**{"backbone": "inception-v3-fid", "resize": None, **kw})


@pytest.mark.parametrize("tool", sorted(REFERENCE_TOOLS))
def test_cli_like_sets_resize_and_scaling(monkeypatch, inception, tool):
    monkeypatch.setattr(cli, "_backbone", lambda name: inception)
    args = _args(like=tool)
    try:
        backbone = cli._backbone_for(args)
        mode, scaling = REFERENCE_TOOLS[tool]
        assert (args.resize, backbone.input_scaling) == (mode, scaling)
        assert cli._tool(args) == {"like": tool, "input_scaling": scaling}
    finally:
        inception.input_scaling = "pytorch-fid"


def test_cli_like_errors(monkeypatch, inception):
    monkeypatch.setattr(cli, "_backbone", lambda name: inception)
    with pytest.raises(
        cli.CLIError,
        match=re.escape("expected --resize clean (or no --resize) with --like clean-fid, got tf1"),
    ):
        cli._backbone_for(_args(like="clean-fid", resize="tf1"))
    monkeypatch.setattr(cli, "_backbone", lambda name: object())
    with pytest.raises(
        cli.CLIError,
        match=re.escape(
            "expected --backbone inception-v3-fid with --like torchmetrics (the FID network of "
            "the reference tools), got --backbone efficientnet-lite0"
        ),
    ):
        cli._backbone_for(_args(like="torchmetrics", backbone="efficientnet-lite0"))
    assert cli._tool(_args(like=None)) == {}
