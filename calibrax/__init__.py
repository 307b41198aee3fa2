"""calibrax: a Flax NNX toolkit for measuring machine-learning models.

Tiers: 0 pure metrics (``calibrax.functional``, ``calibrax.metrics``), 1 frozen-backbone statistics
(FID, KID, IS, PRDC), 2 learned perceptual metrics (``calibrax.learned``), 3 metric-learning losses
(``calibrax.metric_learning``). See ``calibrax.registry`` to list everything by name.
"""

__version__ = "0.1.0"

from calibrax import backbones
from calibrax import core
from calibrax import functional
from calibrax import io
from calibrax import learned
from calibrax import metric_learning
from calibrax import metrics
from calibrax import parallel

__all__ = [
    "__version__",
    "backbones",
    "core",
    "functional",
    "io",
    "learned",
    "metric_learning",
    "metrics",
    "parallel",
]
