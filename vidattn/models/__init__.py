"""Video models: a registry, VideoResNet backbones with attention, heads, weight import.

>>> from vidattn.models import create_model, list_models
>>> model = create_model("r2plus1d_tiny", num_classes=4, attn="stc")
>>> weights = model.frame_weights(clip)  # (B, T), one weight per input frame
"""

from . import glimpse as _glimpse  # noqa: F401  (registers the builders)
from . import resnet as _resnet  # noqa: F401  (registers the builders)
from ._pretrained import TORCHVISION_WEIGHTS, load_pretrained, torchvision_checkpoint_path
from ._registry import create_model, get_model_builder, is_model, list_models, register_model
from .glimpse import GlimpseNet
from .heads import AttentionPoolHead, ClassifierHead, PeakPoolHead, expand_time_weights
from .resnet import VideoResNet

__all__ = [
    "TORCHVISION_WEIGHTS",
    "AttentionPoolHead",
    "ClassifierHead",
    "GlimpseNet",
    "PeakPoolHead",
    "VideoResNet",
    "create_model",
    "expand_time_weights",
    "get_model_builder",
    "is_model",
    "list_models",
    "load_pretrained",
    "register_model",
    "torchvision_checkpoint_path",
]
