"""Training-free object tracking with attention: a batched correlation-filter tracker in torch.

Public API:
    - :class:`DCFTracker`, :class:`DCFConfig`: the tracker (channel, spatial and temporal attention).
    - :class:`ScaleFilter`, :class:`ScaleConfig`: its DSST-style scale estimator.
    - :func:`make_sequence`: test sequences with exact ground truth.
    - :func:`evaluate`, :func:`success_auc`, :func:`precision_at`: OTB metrics.
"""

from vidattn.tracking.dcf import DCFConfig, DCFTracker
from vidattn.tracking.metrics import evaluate, iou_xywh, precision_at, success_auc
from vidattn.tracking.scale import ScaleConfig, ScaleFilter
from vidattn.tracking.synthetic import SyntheticSequence, make_sequence

__all__ = [
    "DCFConfig",
    "DCFTracker",
    "ScaleConfig",
    "ScaleFilter",
    "SyntheticSequence",
    "evaluate",
    "iou_xywh",
    "make_sequence",
    "precision_at",
    "success_auc",
]
