"""calibrax.metric_learning: tier-3 metric-learning distances, reducers, miners and losses."""

from calibrax.metric_learning.accuracy_calculator import AccuracyCalculator
from calibrax.metric_learning.base import BaseMetricLossFunction
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.base import validate_embeddings_and_labels
from calibrax.metric_learning.distances import BaseDistance
from calibrax.metric_learning.distances import BatchedDistance
from calibrax.metric_learning.distances import CosineSimilarity
from calibrax.metric_learning.distances import DotProductSimilarity
from calibrax.metric_learning.distances import LpDistance
from calibrax.metric_learning.distances import SNRDistance
from calibrax.metric_learning.losses import AngularLoss
from calibrax.metric_learning.losses import ArcFaceLoss
from calibrax.metric_learning.losses import BaseLossWrapper
from calibrax.metric_learning.losses import CircleLoss
from calibrax.metric_learning.losses import ContrastiveLoss
from calibrax.metric_learning.losses import CosFaceLoss
from calibrax.metric_learning.losses import CrossBatchMemory
from calibrax.metric_learning.losses import DynamicSoftMarginLoss
from calibrax.metric_learning.losses import FastAPLoss
from calibrax.metric_learning.losses import GeneralizedLiftedStructureLoss
from calibrax.metric_learning.losses import GenericPairLoss
from calibrax.metric_learning.losses import HistogramLoss
from calibrax.metric_learning.losses import InstanceLoss
from calibrax.metric_learning.losses import IntraPairVarianceLoss
from calibrax.metric_learning.losses import LargeMarginSoftmaxLoss
from calibrax.metric_learning.losses import LiftedStructureLoss
from calibrax.metric_learning.losses import ManifoldLoss
from calibrax.metric_learning.losses import MarginLoss
from calibrax.metric_learning.losses import MultipleLosses
from calibrax.metric_learning.losses import MultiSimilarityLoss
from calibrax.metric_learning.losses import NCALoss
from calibrax.metric_learning.losses import NormalizedSoftmaxLoss
from calibrax.metric_learning.losses import NPairsLoss
from calibrax.metric_learning.losses import NTXentLoss
from calibrax.metric_learning.losses import P2SGradLoss
from calibrax.metric_learning.losses import PNPLoss
from calibrax.metric_learning.losses import ProxyAnchorLoss
from calibrax.metric_learning.losses import ProxyNCALoss
from calibrax.metric_learning.losses import RankedListLoss
from calibrax.metric_learning.losses import SelfSupervisedLoss
from calibrax.metric_learning.losses import SignalToNoiseRatioContrastiveLoss
from calibrax.metric_learning.losses import SmoothAPLoss
from calibrax.metric_learning.losses import SoftTripleLoss
from calibrax.metric_learning.losses import SphereFaceLoss
from calibrax.metric_learning.losses import SubCenterArcFaceLoss
from calibrax.metric_learning.losses import SupConLoss
from calibrax.metric_learning.losses import ThresholdConsistentMarginLoss
from calibrax.metric_learning.losses import TripletMarginLoss
from calibrax.metric_learning.losses import TupletMarginLoss
from calibrax.metric_learning.losses import VICRegLoss
from calibrax.metric_learning.miners import AngularMiner
from calibrax.metric_learning.miners import BaseMiner
from calibrax.metric_learning.miners import BatchEasyHardMiner
from calibrax.metric_learning.miners import BatchHardMiner
from calibrax.metric_learning.miners import DistanceWeightedMiner
from calibrax.metric_learning.miners import EmbeddingsAlreadyPackagedAsTriplets
from calibrax.metric_learning.miners import HDCMiner
from calibrax.metric_learning.miners import MultiSimilarityMiner
from calibrax.metric_learning.miners import PairMarginMiner
from calibrax.metric_learning.miners import TripletMarginMiner
from calibrax.metric_learning.miners import UniformHistogramMiner
from calibrax.metric_learning.reducers import AvgNonZeroReducer
from calibrax.metric_learning.reducers import BaseReducer
from calibrax.metric_learning.reducers import ClassWeightedReducer
from calibrax.metric_learning.reducers import DivisorReducer
from calibrax.metric_learning.reducers import DoNothingReducer
from calibrax.metric_learning.reducers import MeanReducer
from calibrax.metric_learning.reducers import MultipleReducers
from calibrax.metric_learning.reducers import PerAnchorReducer
from calibrax.metric_learning.reducers import SumReducer
from calibrax.metric_learning.reducers import ThresholdReducer
from calibrax.metric_learning.regularizers import BaseRegularizer
from calibrax.metric_learning.regularizers import CenterInvariantRegularizer
from calibrax.metric_learning.regularizers import LpRegularizer
from calibrax.metric_learning.regularizers import RegularFaceRegularizer
from calibrax.metric_learning.regularizers import SparseCentersRegularizer
from calibrax.metric_learning.regularizers import ZeroMeanRegularizer
from calibrax.metric_learning.samplers import MPerClassSampler
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import TripletList
from calibrax.metric_learning.tuples import TripletMask

__all__ = [
    "AccuracyCalculator",
    "AngularLoss",
    "AngularMiner",
    "ArcFaceLoss",
    "AvgNonZeroReducer",
    "BaseDistance",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "BaseMiner",
    "BaseReducer",
    "BaseRegularizer",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "BatchedDistance",
    "CenterInvariantRegularizer",
    "CircleLoss",
    "ClassWeightedReducer",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CosineSimilarity",
    "CrossBatchMemory",
    "DistanceWeightedMiner",
    "DivisorReducer",
    "DoNothingReducer",
    "DotProductSimilarity",
    "DynamicSoftMarginLoss",
    "EmbeddingsAlreadyPackagedAsTriplets",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "HDCMiner",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "LiftedStructureLoss",
    "LossTerm",
    "LpDistance",
    "LpRegularizer",
    "MPerClassSampler",
    "ManifoldLoss",
    "MarginLoss",
    "MeanReducer",
    "MultiSimilarityLoss",
    "MultiSimilarityMiner",
    "MultipleLosses",
    "MultipleReducers",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "PNPLoss",
    "PairMarginMiner",
    "PairMask",
    "PerAnchorReducer",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RankedListLoss",
    "Reference",
    "RegularFaceRegularizer",
    "SNRDistance",
    "SelfSupervisedLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SmoothAPLoss",
    "SoftTripleLoss",
    "SparseCentersRegularizer",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SumReducer",
    "SupConLoss",
    "ThresholdConsistentMarginLoss",
    "ThresholdReducer",
    "TripletList",
    "TripletMarginLoss",
    "TripletMarginMiner",
    "TripletMask",
    "TupletMarginLoss",
    "UniformHistogramMiner",
    "VICRegLoss",
    "ZeroMeanRegularizer",
    "validate_embeddings_and_labels",
]
