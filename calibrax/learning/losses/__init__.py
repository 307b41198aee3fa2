"""Metric-learning losses: ``loss(embeddings, labels) -> scalar``, jit-compiled and
differentiable."""

from calibrax.learning.losses.arcface import ArcFaceLoss
from calibrax.learning.losses.circle import CircleLoss
from calibrax.learning.losses.contrastive import ContrastiveLoss
from calibrax.learning.losses.cosface import CosFaceLoss
from calibrax.learning.losses.generalized_lifted_structure import GeneralizedLiftedStructureLoss
from calibrax.learning.losses.lifted_structure import LiftedStructureLoss
from calibrax.learning.losses.margin import MarginLoss
from calibrax.learning.losses.multi_similarity import MultiSimilarityLoss
from calibrax.learning.losses.n_pairs import NPairsLoss
from calibrax.learning.losses.normalized_softmax import NormalizedSoftmaxLoss
from calibrax.learning.losses.ntxent import NTXentLoss
from calibrax.learning.losses.proxy_anchor import ProxyAnchorLoss
from calibrax.learning.losses.proxy_nca import ProxyNCALoss
from calibrax.learning.losses.subcenter_arcface import SubCenterArcFaceLoss
from calibrax.learning.losses.supcon import SupConLoss
from calibrax.learning.losses.triplet_margin import TripletMarginLoss

__all__ = [
    "ArcFaceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "TripletMarginLoss",
]
