"""calibrax.learning: tier-3 metric-learning distances, reducers, miners and losses."""

from calibrax.learning.base import BaseMetricLossFunction
from calibrax.learning.base import LossTerm
from calibrax.learning.base import validate_embeddings_and_labels
from calibrax.learning.distances import BaseDistance
from calibrax.learning.distances import CosineSimilarity
from calibrax.learning.distances import DotProductSimilarity
from calibrax.learning.distances import LpDistance
from calibrax.learning.losses import ArcFaceLoss
from calibrax.learning.losses import CircleLoss
from calibrax.learning.losses import ContrastiveLoss
from calibrax.learning.losses import CosFaceLoss
from calibrax.learning.losses import GeneralizedLiftedStructureLoss
from calibrax.learning.losses import LiftedStructureLoss
from calibrax.learning.losses import MarginLoss
from calibrax.learning.losses import MultiSimilarityLoss
from calibrax.learning.losses import NormalizedSoftmaxLoss
from calibrax.learning.losses import NPairsLoss
from calibrax.learning.losses import NTXentLoss
from calibrax.learning.losses import ProxyAnchorLoss
from calibrax.learning.losses import ProxyNCALoss
from calibrax.learning.losses import SubCenterArcFaceLoss
from calibrax.learning.losses import SupConLoss
from calibrax.learning.losses import TripletMarginLoss
from calibrax.learning.miners import BaseMiner
from calibrax.learning.miners import BatchHardMiner
from calibrax.learning.miners import MultiSimilarityMiner
from calibrax.learning.miners import PairMarginMiner
from calibrax.learning.miners import TripletMarginMiner
from calibrax.learning.reducers import AvgNonZeroReducer
from calibrax.learning.reducers import BaseReducer
from calibrax.learning.reducers import MeanReducer
from calibrax.learning.reducers import SumReducer
from calibrax.learning.reducers import ThresholdReducer
from calibrax.learning.tuples import PairMask
from calibrax.learning.tuples import TripletMask

__all__ = [
    "ArcFaceLoss",
    "AvgNonZeroReducer",
    "BaseDistance",
    "BaseMetricLossFunction",
    "BaseMiner",
    "BaseReducer",
    "BatchHardMiner",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CosineSimilarity",
    "DotProductSimilarity",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructureLoss",
    "LossTerm",
    "LpDistance",
    "MarginLoss",
    "MeanReducer",
    "MultiSimilarityLoss",
    "MultiSimilarityMiner",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "PairMarginMiner",
    "PairMask",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SubCenterArcFaceLoss",
    "SumReducer",
    "SupConLoss",
    "ThresholdReducer",
    "TripletMarginLoss",
    "TripletMarginMiner",
    "TripletMask",
    "validate_embeddings_and_labels",
]
