"""calibrax.io."""

from calibrax.io.images import ImageFolder
from calibrax.io.images import UnreadableImageError
from calibrax.io.images import list_images
from calibrax.io.images import load_image

__all__ = [
    "ImageFolder",
    "UnreadableImageError",
    "list_images",
    "load_image",
]
