"""Metric-learning losses: ``loss(embeddings, labels) -> scalar``, jit-compiled and
differentiable."""

from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses.angular import AngularLoss
from calibrax.metric_learning.losses.arcface import ArcFaceLoss
from calibrax.metric_learning.losses.base_loss_wrapper import BaseLossWrapper
from calibrax.metric_learning.losses.circle import CircleLoss
from calibrax.metric_learning.losses.contrastive import ContrastiveLoss
from calibrax.metric_learning.losses.cosface import CosFaceLoss
from calibrax.metric_learning.losses.cross_batch_memory import CrossBatchMemory
from calibrax.metric_learning.losses.dynamic_soft_margin import DynamicSoftMarginLoss
from calibrax.metric_learning.losses.fast_ap import FastAPLoss
from calibrax.metric_learning.losses.generalized_lifted_structure import (
    GeneralizedLiftedStructureLoss,
)
from calibrax.metric_learning.losses.histogram import HistogramLoss
from calibrax.metric_learning.losses.instance import InstanceLoss
from calibrax.metric_learning.losses.intra_pair_variance import IntraPairVarianceLoss
from calibrax.metric_learning.losses.large_margin_softmax import LargeMarginSoftmaxLoss
from calibrax.metric_learning.losses.lifted_structure import LiftedStructureLoss
from calibrax.metric_learning.losses.manifold import ManifoldLoss
from calibrax.metric_learning.losses.margin import MarginLoss
from calibrax.metric_learning.losses.multi_similarity import MultiSimilarityLoss
from calibrax.metric_learning.losses.multiple_losses import MultipleLosses
from calibrax.metric_learning.losses.n_pairs import NPairsLoss
from calibrax.metric_learning.losses.nca import NCALoss
from calibrax.metric_learning.losses.normalized_softmax import NormalizedSoftmaxLoss
from calibrax.metric_learning.losses.ntxent import NTXentLoss
from calibrax.metric_learning.losses.p2s_grad import P2SGradLoss
from calibrax.metric_learning.losses.pnp import PNPLoss
from calibrax.metric_learning.losses.proxy_anchor import ProxyAnchorLoss
from calibrax.metric_learning.losses.proxy_nca import ProxyNCALoss
from calibrax.metric_learning.losses.ranked_list import RankedListLoss
from calibrax.metric_learning.losses.self_supervised import SelfSupervisedLoss
from calibrax.metric_learning.losses.signal_to_noise_ratio_contrastive import (
    SignalToNoiseRatioContrastiveLoss,
)
from calibrax.metric_learning.losses.smooth_ap import SmoothAPLoss
from calibrax.metric_learning.losses.soft_triple import SoftTripleLoss
from calibrax.metric_learning.losses.sphereface import SphereFaceLoss
from calibrax.metric_learning.losses.subcenter_arcface import SubCenterArcFaceLoss
from calibrax.metric_learning.losses.supcon import SupConLoss
from calibrax.metric_learning.losses.threshold_consistent_margin import (
    ThresholdConsistentMarginLoss,
)
from calibrax.metric_learning.losses.triplet_margin import TripletMarginLoss
from calibrax.metric_learning.losses.tuplet_margin import TupletMarginLoss
from calibrax.metric_learning.losses.vicreg import VICRegLoss

__all__ = [
    "AngularLoss",
    "ArcFaceLoss",
    "BaseLossWrapper",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "DynamicSoftMarginLoss",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "LiftedStructureLoss",
    "ManifoldLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "MultipleLosses",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "PNPLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RankedListLoss",
    "SelfSupervisedLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SmoothAPLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "ThresholdConsistentMarginLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "VICRegLoss",
]
