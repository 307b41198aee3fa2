"""calibrax.metric_learning: tier-3 metric-learning distances, reducers, miners and losses."""

from calibrax.metric_learning.base import BaseMetricLossFunction
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.base import validate_embeddings_and_labels
from calibrax.metric_learning.distances import BaseDistance
from calibrax.metric_learning.distances import CosineSimilarity
from calibrax.metric_learning.distances import DotProductSimilarity
from calibrax.metric_learning.distances import LpDistance
from calibrax.metric_learning.losses import ArcFaceLoss
from calibrax.metric_learning.losses import BaseLossWrapper
from calibrax.metric_learning.losses import CircleLoss
from calibrax.metric_learning.losses import ContrastiveLoss
from calibrax.metric_learning.losses import CosFaceLoss
from calibrax.metric_learning.losses import CrossBatchMemory
from calibrax.metric_learning.losses import GeneralizedLiftedStructureLoss
from calibrax.metric_learning.losses import GenericPairLoss
from calibrax.metric_learning.losses import LiftedStructureLoss
from calibrax.metric_learning.losses import MarginLoss
from calibrax.metric_learning.losses import MultipleLosses
from calibrax.metric_learning.losses import MultiSimilarityLoss
from calibrax.metric_learning.losses import NormalizedSoftmaxLoss
from calibrax.metric_learning.losses import NPairsLoss
from calibrax.metric_learning.losses import NTXentLoss
from calibrax.metric_learning.losses import ProxyAnchorLoss
from calibrax.metric_learning.losses import ProxyNCALoss
from calibrax.metric_learning.losses import SelfSupervisedLoss
from calibrax.metric_learning.losses import SubCenterArcFaceLoss
from calibrax.metric_learning.losses import SupConLoss
from calibrax.metric_learning.losses import TripletMarginLoss
from calibrax.metric_learning.miners import BaseMiner
from calibrax.metric_learning.miners import BatchHardMiner
from calibrax.metric_learning.miners import MultiSimilarityMiner
from calibrax.metric_learning.miners import PairMarginMiner
from calibrax.metric_learning.miners import TripletMarginMiner
from calibrax.metric_learning.reducers import AvgNonZeroReducer
from calibrax.metric_learning.reducers import BaseReducer
from calibrax.metric_learning.reducers import MeanReducer
from calibrax.metric_learning.reducers import SumReducer
from calibrax.metric_learning.reducers import ThresholdReducer
from calibrax.metric_learning.regularizers import BaseRegularizer
from calibrax.metric_learning.regularizers import CenterInvariantRegularizer
from calibrax.metric_learning.regularizers import LpRegularizer
from calibrax.metric_learning.regularizers import RegularFaceRegularizer
from calibrax.metric_learning.regularizers import SparseCentersRegularizer
from calibrax.metric_learning.regularizers import ZeroMeanRegularizer
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import TripletList
from calibrax.metric_learning.tuples import TripletMask

__all__ = [
    "ArcFaceLoss",
    "AvgNonZeroReducer",
    "BaseDistance",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "BaseMiner",
    "BaseReducer",
    "BaseRegularizer",
    "BatchHardMiner",
    "CenterInvariantRegularizer",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CosineSimilarity",
    "CrossBatchMemory",
    "DotProductSimilarity",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "LiftedStructureLoss",
    "LossTerm",
    "LpDistance",
    "LpRegularizer",
    "MarginLoss",
    "MeanReducer",
    "MultiSimilarityLoss",
    "MultiSimilarityMiner",
    "MultipleLosses",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "PairMarginMiner",
    "PairMask",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "Reference",
    "RegularFaceRegularizer",
    "SelfSupervisedLoss",
    "SparseCentersRegularizer",
    "SubCenterArcFaceLoss",
    "SumReducer",
    "SupConLoss",
    "ThresholdReducer",
    "TripletList",
    "TripletMarginLoss",
    "TripletMarginMiner",
    "TripletMask",
    "ZeroMeanRegularizer",
    "validate_embeddings_and_labels",
]
