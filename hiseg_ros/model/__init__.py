"""Segmentation network of hiseg_ros (runtime side: no dependency on ``training``).

Plain-PyTorch backbones with torchvision's checkpoint key names, the hierarchical heads of
Meletis & Dubbelman, the optional light decoder, the pixel decisions and the shared input
normalisation.
"""

from .backbones import (
    BACKBONES,
    CheckpointError,
    build_backbone,
    default_weights_path,
    load_backbone_checkpoint,
)
from .decoder import DECODERS
from .mobilenet_v2 import MobileNetV2
from .network import DecisionMode, HierarchicalSegNet, decide, decide_one
from .normalize import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, NormalizeInput, normalize_image, normalize_tensor
from .resnet import ResNet

__all__ = [
    "BACKBONES",
    "DECODERS",
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "CheckpointError",
    "DecisionMode",
    "HierarchicalSegNet",
    "MobileNetV2",
    "NormalizeInput",
    "ResNet",
    "build_backbone",
    "decide",
    "decide_one",
    "default_weights_path",
    "load_backbone_checkpoint",
    "normalize_image",
    "normalize_tensor",
]
