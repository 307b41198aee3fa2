"""calibrax.functional."""

from calibrax.functional.calibration import ReliabilityDiagram
from calibrax.functional.calibration import brier_score
from calibrax.functional.calibration import expected_calibration_error
from calibrax.functional.calibration import maximum_calibration_error
from calibrax.functional.calibration import negative_log_likelihood
from calibrax.functional.calibration import reliability_diagram
from calibrax.functional.classification import accuracy
from calibrax.functional.classification import auroc
from calibrax.functional.classification import confusion_matrix
from calibrax.functional.classification import f1_score
from calibrax.functional.classification import log_loss
from calibrax.functional.classification import precision
from calibrax.functional.classification import predicted_labels
from calibrax.functional.classification import recall
from calibrax.functional.classification import top_k_accuracy
from calibrax.functional.cmmd import cmmd
from calibrax.functional.fid import frechet_distance
from calibrax.functional.fid import frechet_distance_from_features
from calibrax.functional.image import ms_ssim
from calibrax.functional.image import psnr
from calibrax.functional.image import ssim
from calibrax.functional.inception_score import inception_score
from calibrax.functional.kid import kernel_inception_distance
from calibrax.functional.prdc import precision_recall_density_coverage
from calibrax.functional.regression import mean_absolute_error
from calibrax.functional.regression import mean_absolute_percentage_error
from calibrax.functional.regression import mean_squared_error
from calibrax.functional.regression import pearson_correlation
from calibrax.functional.regression import r2_score
from calibrax.functional.regression import root_mean_squared_error
from calibrax.functional.resize import JAX_RESIZE_METHODS
from calibrax.functional.resize import RESIZE_MODES
from calibrax.functional.resize import resize_images
from calibrax.functional.resize import resize_images_numpy
from calibrax.functional.resize import resize_matrix
from calibrax.functional.retrieval import map_at_r
from calibrax.functional.retrieval import precision_at_1
from calibrax.functional.retrieval import r_precision
from calibrax.functional.retrieval import recall_at_k
from calibrax.functional.retrieval import retrieval_metrics

__all__ = [
    "JAX_RESIZE_METHODS",
    "RESIZE_MODES",
    "ReliabilityDiagram",
    "accuracy",
    "auroc",
    "brier_score",
    "cmmd",
    "confusion_matrix",
    "expected_calibration_error",
    "f1_score",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_score",
    "kernel_inception_distance",
    "log_loss",
    "map_at_r",
    "maximum_calibration_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_error",
    "ms_ssim",
    "negative_log_likelihood",
    "pearson_correlation",
    "precision",
    "precision_at_1",
    "precision_recall_density_coverage",
    "predicted_labels",
    "psnr",
    "r2_score",
    "r_precision",
    "recall",
    "recall_at_k",
    "reliability_diagram",
    "resize_images",
    "resize_images_numpy",
    "resize_matrix",
    "retrieval_metrics",
    "root_mean_squared_error",
    "ssim",
    "top_k_accuracy",
]
