"""calibrax.io."""

from calibrax.io.checkpoint import CheckpointManager
from calibrax.io.checkpoint import read_metadata
from calibrax.io.checkpoint import restore_state
from calibrax.io.checkpoint import save_state
from calibrax.io.images import IMAGE_EXTENSIONS
from calibrax.io.images import ImageFolder
from calibrax.io.images import ImageScan
from calibrax.io.images import UnreadableImageError
from calibrax.io.images import list_images
from calibrax.io.images import load_image
from calibrax.io.images import scan_images
from calibrax.io.torch_checkpoint import CheckpointError
from calibrax.io.torch_checkpoint import UnsafeCheckpointError
from calibrax.io.torch_checkpoint import load_torch_checkpoint
from calibrax.io.weights import KNOWN_WEIGHTS
from calibrax.io.weights import HashMismatchError
from calibrax.io.weights import WeightsNotFoundError
from calibrax.io.weights import import_weights
from calibrax.io.weights import weights_status

__all__ = [
    "IMAGE_EXTENSIONS",
    "KNOWN_WEIGHTS",
    "CheckpointError",
    "CheckpointManager",
    "HashMismatchError",
    "ImageFolder",
    "ImageScan",
    "UnreadableImageError",
    "UnsafeCheckpointError",
    "WeightsNotFoundError",
    "import_weights",
    "list_images",
    "load_image",
    "load_torch_checkpoint",
    "read_metadata",
    "restore_state",
    "save_state",
    "scan_images",
    "weights_status",
]
