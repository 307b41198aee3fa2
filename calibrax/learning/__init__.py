"""Deprecated alias of :mod:`calibrax.metric_learning` (tier 3), kept importable for one release.

``calibrax.learned`` (tier 2, learned perceptual metrics) and ``calibrax.learning`` differed by two
letters, so tier 3 now carries the field's own name. Importing this module, or any
``calibrax.learning.<submodule>``, warns with a :class:`DeprecationWarning` and gives the very same
objects as ``calibrax.metric_learning``.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from calibrax import metric_learning as _target

_OLD = "calibrax.learning"
_NEW = "calibrax.metric_learning"

warnings.warn(
    "calibrax.learning is deprecated and will be removed in the next release: "
    "import calibrax.metric_learning instead",
    DeprecationWarning,
    stacklevel=2,
)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``calibrax.learning.X`` to the already-importable ``calibrax.metric_learning.X``."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_OLD + "."):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(_NEW + spec.name[len(_OLD) :])

    def exec_module(self, module):
        pass


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())

__all__ = list(_target.__all__)
globals().update({name: getattr(_target, name) for name in __all__})
for _sub in ("base", "distances", "losses", "miners", "reducers", "tuples"):
    globals()[_sub] = importlib.import_module(f"{_NEW}.{_sub}")
