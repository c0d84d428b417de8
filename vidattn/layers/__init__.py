"""Attention layers for video tensors ``(B, C, T, H, W)``.

Every layer takes ``channels`` first, can start as the exact identity
(``identity_init=True``), and records the weights it computes inside
:func:`collect_attention`. Build one by name with :func:`create_attn`.
"""

from ._base import AttentionLayer, ShapeError, check_video
from ._capture import RecordsAttention, collect_attention
from .cbam import CBAM
from .create_attn import ATTN_LAYERS, create_attn, get_attn, list_attn
from .eca import EfficientChannelAttention
from .hard import HardTemporalAttention, select_topk
from .local import LocalAttention
from .non_local import NonLocalBlock
from .spatial import SpatialAttention
from .squeeze_excite import SqueezeExcite
from .stc import STCAttention
from .stn import SpatialTransformer
from .temporal import TemporalAttention
from .temporal_self_attn import TemporalSelfAttention, sincos_positions

__all__ = [
    "ATTN_LAYERS",
    "AttentionLayer",
    "CBAM",
    "EfficientChannelAttention",
    "HardTemporalAttention",
    "select_topk",
    "LocalAttention",
    "NonLocalBlock",
    "RecordsAttention",
    "STCAttention",
    "ShapeError",
    "SpatialAttention",
    "SpatialTransformer",
    "SqueezeExcite",
    "TemporalAttention",
    "TemporalSelfAttention",
    "check_video",
    "collect_attention",
    "create_attn",
    "get_attn",
    "list_attn",
    "sincos_positions",
]
