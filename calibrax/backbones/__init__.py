"""calibrax.backbones: frozen pretrained feature extractors as ``nnx.Module``.

``load(name)`` returns a backbone with its pretrained weights from the calibrax cache; the embedded
default ``"efficientnet-lite0"`` works out of the box (its weights ship with an installed package).
"""

from calibrax.backbones._layers import freeze
from calibrax.backbones._layers import unfreeze
from calibrax.backbones._mapping import StateDictMismatchError
from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._mapping import module_state_dict
from calibrax.backbones._zoo import BackboneSpec
from calibrax.backbones._zoo import backbone_names
from calibrax.backbones._zoo import build
from calibrax.backbones._zoo import load
from calibrax.backbones._zoo import register_backbone
from calibrax.backbones.alexnet import AlexNet
from calibrax.backbones.clip import CLIPVision
from calibrax.backbones.dinov2 import DINOv2
from calibrax.backbones.dinov2 import DINOv2Output
from calibrax.backbones.efficientnet_lite import EfficientNetLite0
from calibrax.backbones.efficientnet_lite import EfficientNetOutput
from calibrax.backbones.inception import InceptionOutput
from calibrax.backbones.inception import InceptionV3FID
from calibrax.backbones.squeezenet import SqueezeNet1_1
from calibrax.backbones.vgg import VGG16

__all__ = [
    "VGG16",
    "AlexNet",
    "BackboneSpec",
    "CLIPVision",
    "DINOv2",
    "DINOv2Output",
    "EfficientNetLite0",
    "EfficientNetOutput",
    "InceptionOutput",
    "InceptionV3FID",
    "SqueezeNet1_1",
    "StateDictMismatchError",
    "backbone_names",
    "build",
    "freeze",
    "load",
    "load_state_dict",
    "module_state_dict",
    "register_backbone",
    "unfreeze",
]
