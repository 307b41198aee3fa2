"""Metric-learning losses: ``loss(embeddings, labels) -> scalar``, jit-compiled and
differentiable."""

from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses.arcface import ArcFaceLoss
from calibrax.metric_learning.losses.base_loss_wrapper import BaseLossWrapper
from calibrax.metric_learning.losses.circle import CircleLoss
from calibrax.metric_learning.losses.contrastive import ContrastiveLoss
from calibrax.metric_learning.losses.cosface import CosFaceLoss
from calibrax.metric_learning.losses.cross_batch_memory import CrossBatchMemory
from calibrax.metric_learning.losses.generalized_lifted_structure import (
    GeneralizedLiftedStructureLoss,
)
from calibrax.metric_learning.losses.lifted_structure import LiftedStructureLoss
from calibrax.metric_learning.losses.margin import MarginLoss
from calibrax.metric_learning.losses.multi_similarity import MultiSimilarityLoss
from calibrax.metric_learning.losses.multiple_losses import MultipleLosses
from calibrax.metric_learning.losses.n_pairs import NPairsLoss
from calibrax.metric_learning.losses.normalized_softmax import NormalizedSoftmaxLoss
from calibrax.metric_learning.losses.ntxent import NTXentLoss
from calibrax.metric_learning.losses.proxy_anchor import ProxyAnchorLoss
from calibrax.metric_learning.losses.proxy_nca import ProxyNCALoss
from calibrax.metric_learning.losses.self_supervised import SelfSupervisedLoss
from calibrax.metric_learning.losses.subcenter_arcface import SubCenterArcFaceLoss
from calibrax.metric_learning.losses.supcon import SupConLoss
from calibrax.metric_learning.losses.triplet_margin import TripletMarginLoss

__all__ = [
    "ArcFaceLoss",
    "BaseLossWrapper",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "MultipleLosses",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SelfSupervisedLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "TripletMarginLoss",
]
