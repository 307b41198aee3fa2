"""Every name in every public package's ``__all__`` imports."""

import importlib

import pytest

PACKAGES = [
    "calibrax",
    "calibrax.core",
    "calibrax.registry",
    "calibrax.functional",
    "calibrax.io",
    "calibrax.metrics",
    "calibrax.backbones",
    "calibrax.learned",
    "calibrax.metric_learning",
    "calibrax.parallel",
    "calibrax.benchmarks",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_import(name):
    module = importlib.import_module(name)
    assert isinstance(module.__all__, (list, tuple))
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"
