"""calibrax.metrics."""

from calibrax.metrics.calibration import BrierScore
from calibrax.metrics.calibration import ExpectedCalibrationError
from calibrax.metrics.calibration import MaximumCalibrationError
from calibrax.metrics.calibration import NegativeLogLikelihood
from calibrax.metrics.calibration import StreamingBrierScore
from calibrax.metrics.calibration import StreamingExpectedCalibrationError
from calibrax.metrics.calibration import StreamingMaximumCalibrationError
from calibrax.metrics.calibration import StreamingNegativeLogLikelihood
from calibrax.metrics.calibration import StreamingReliabilityDiagram
from calibrax.metrics.classification import AUROC
from calibrax.metrics.classification import Accuracy
from calibrax.metrics.classification import F1Score
from calibrax.metrics.classification import LogLoss
from calibrax.metrics.classification import Precision
from calibrax.metrics.classification import Recall
from calibrax.metrics.classification import StreamingAccuracy
from calibrax.metrics.classification import StreamingConfusionMatrix
from calibrax.metrics.classification import StreamingF1Score
from calibrax.metrics.classification import StreamingLogLoss
from calibrax.metrics.classification import StreamingPrecision
from calibrax.metrics.classification import StreamingRecall
from calibrax.metrics.classification import StreamingTopKAccuracy
from calibrax.metrics.classification import TopKAccuracy
from calibrax.metrics.cmmd import CMMD
from calibrax.metrics.collection import GENERATIVE_METRICS
from calibrax.metrics.collection import GenerativeMetrics
from calibrax.metrics.fid import FrechetDistance
from calibrax.metrics.frozen_backbone import FrozenBackboneMetric
from calibrax.metrics.image import MSSSIM
from calibrax.metrics.image import PSNR
from calibrax.metrics.image import SSIM
from calibrax.metrics.image import StreamingMSSSIM
from calibrax.metrics.image import StreamingPSNR
from calibrax.metrics.image import StreamingSSIM
from calibrax.metrics.inception_score import InceptionScore
from calibrax.metrics.kid import KernelDistance
from calibrax.metrics.prdc import PrecisionRecall
from calibrax.metrics.reference import Reference
from calibrax.metrics.reference import read_reference
from calibrax.metrics.regression import MeanAbsoluteError
from calibrax.metrics.regression import MeanAbsolutePercentageError
from calibrax.metrics.regression import MeanSquaredError
from calibrax.metrics.regression import PearsonCorrelation
from calibrax.metrics.regression import R2Score
from calibrax.metrics.regression import RootMeanSquaredError
from calibrax.metrics.regression import StreamingMeanAbsoluteError
from calibrax.metrics.regression import StreamingMeanAbsolutePercentageError
from calibrax.metrics.regression import StreamingMeanSquaredError
from calibrax.metrics.regression import StreamingPearsonCorrelation
from calibrax.metrics.regression import StreamingR2Score
from calibrax.metrics.regression import StreamingRootMeanSquaredError
from calibrax.metrics.retrieval import MAPAtR
from calibrax.metrics.retrieval import PrecisionAt1
from calibrax.metrics.retrieval import RecallAtK
from calibrax.metrics.retrieval import RPrecision
from calibrax.metrics.retrieval import StreamingRetrieval

__all__ = [
    "AUROC",
    "CMMD",
    "GENERATIVE_METRICS",
    "MSSSIM",
    "PSNR",
    "SSIM",
    "Accuracy",
    "BrierScore",
    "ExpectedCalibrationError",
    "F1Score",
    "FrechetDistance",
    "FrozenBackboneMetric",
    "GenerativeMetrics",
    "InceptionScore",
    "KernelDistance",
    "LogLoss",
    "MAPAtR",
    "MaximumCalibrationError",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredError",
    "NegativeLogLikelihood",
    "PearsonCorrelation",
    "Precision",
    "PrecisionAt1",
    "PrecisionRecall",
    "R2Score",
    "RPrecision",
    "Recall",
    "RecallAtK",
    "Reference",
    "RootMeanSquaredError",
    "StreamingAccuracy",
    "StreamingBrierScore",
    "StreamingConfusionMatrix",
    "StreamingExpectedCalibrationError",
    "StreamingF1Score",
    "StreamingLogLoss",
    "StreamingMSSSIM",
    "StreamingMaximumCalibrationError",
    "StreamingMeanAbsoluteError",
    "StreamingMeanAbsolutePercentageError",
    "StreamingMeanSquaredError",
    "StreamingNegativeLogLikelihood",
    "StreamingPSNR",
    "StreamingPearsonCorrelation",
    "StreamingPrecision",
    "StreamingR2Score",
    "StreamingRecall",
    "StreamingReliabilityDiagram",
    "StreamingRetrieval",
    "StreamingRootMeanSquaredError",
    "StreamingSSIM",
    "StreamingTopKAccuracy",
    "TopKAccuracy",
    "read_reference",
]
