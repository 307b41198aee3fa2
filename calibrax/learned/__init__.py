"""Tier 2: learned perceptual metrics (LPIPS, DISTS), 2AFC data, training and evaluation; calibration heads."""

from calibrax.learned.base import LearnedMetric
from calibrax.learned.baselines import BASELINES
from calibrax.learned.baselines import baseline_distance
from calibrax.learned.baselines import rgb_to_lab
from calibrax.learned.calibration import CalibrationKnots
from calibrax.learned.calibration import CalibrationReport
from calibrax.learned.calibration import DirichletCalibration
from calibrax.learned.calibration import IsotonicCalibration
from calibrax.learned.calibration import MatrixScaling
from calibrax.learned.calibration import PlattScaling
from calibrax.learned.calibration import TemperatureScaling
from calibrax.learned.calibration import VectorScaling
from calibrax.learned.data import DISTORTIONS
from calibrax.learned.data import JNDFolder
from calibrax.learned.data import SyntheticTwoAFC
from calibrax.learned.data import TwoAFCFolder
from calibrax.learned.data import distort
from calibrax.learned.data import offline_images
from calibrax.learned.dists import DISTS
from calibrax.learned.dists import dists
from calibrax.learned.dists import load_official_dists_weights
from calibrax.learned.evaluation import jnd_map
from calibrax.learned.evaluation import two_afc_score
from calibrax.learned.lpips import LPIPS
from calibrax.learned.lpips import TRUNKS
from calibrax.learned.lpips import LPIPSMetric
from calibrax.learned.lpips import load_official_heads
from calibrax.learned.lpips import lpips
from calibrax.learned.lpips import read_heads
from calibrax.learned.lpips_tiles import TilePlan
from calibrax.learned.lpips_tiles import lpips_tiled
from calibrax.learned.lpips_tiles import tile_plan
from calibrax.learned.payoff import TwoAFCRow
from calibrax.learned.payoff import bootstrap_interval
from calibrax.learned.payoff import format_payoff_table
from calibrax.learned.payoff import gap_closed
from calibrax.learned.payoff import pair_distances
from calibrax.learned.payoff import payoff_table
from calibrax.learned.payoff import per_type_2afc
from calibrax.learned.payoff import plot_per_type
from calibrax.learned.ranking import RankingHead
from calibrax.learned.ranking import ranking_loss
from calibrax.learned.training import LPIPSTrainer
from calibrax.learned.training import evaluate_2afc
from calibrax.learned.training import fit
from calibrax.learned.training import lpips_schedule
from calibrax.learned.training import plot_history
from calibrax.learned.training import train_dists
from calibrax.learned.training import train_lpips

__all__ = [
    "BASELINES",
    "DISTORTIONS",
    "DISTS",
    "LPIPS",
    "TRUNKS",
    "CalibrationKnots",
    "CalibrationReport",
    "DirichletCalibration",
    "IsotonicCalibration",
    "JNDFolder",
    "LPIPSMetric",
    "LPIPSTrainer",
    "LearnedMetric",
    "MatrixScaling",
    "PlattScaling",
    "RankingHead",
    "SyntheticTwoAFC",
    "TemperatureScaling",
    "TilePlan",
    "TwoAFCFolder",
    "TwoAFCRow",
    "VectorScaling",
    "baseline_distance",
    "bootstrap_interval",
    "distort",
    "dists",
    "evaluate_2afc",
    "fit",
    "format_payoff_table",
    "gap_closed",
    "jnd_map",
    "load_official_dists_weights",
    "load_official_heads",
    "lpips",
    "lpips_schedule",
    "lpips_tiled",
    "offline_images",
    "pair_distances",
    "payoff_table",
    "per_type_2afc",
    "plot_history",
    "plot_per_type",
    "ranking_loss",
    "read_heads",
    "rgb_to_lab",
    "tile_plan",
    "train_dists",
    "train_lpips",
    "two_afc_score",
]
