"""Training-free object tracking with attention: a batched correlation-filter tracker in torch.

Public API:
    - :class:`DCFTracker`, :class:`DCFConfig`: the tracker (channel, spatial and temporal attention).
    - :class:`ScaleFilter`, :class:`ScaleConfig`: its DSST-style scale estimator.
    - :func:`make_sequence`: test sequences with exact ground truth.
    - :func:`evaluate`, :func:`success_auc`, :func:`precision_at`: OTB metrics.
    - :mod:`vidattn.tracking.otb`: boxes and sequences in the OTB layout (read, write, validate).
    - :func:`open_frame_source`: a video or frame folder streamed frame by frame.
    - :func:`track_stream`, :func:`write_outputs`: one run and its ``track.json`` / OTB outputs.
"""

from vidattn.tracking.dcf import DCFConfig, DCFTracker
from vidattn.tracking.metrics import evaluate, iou_xywh, precision_at, success_auc
from vidattn.tracking.run import TrackRun, track_stream, write_outputs
from vidattn.tracking.scale import ScaleConfig, ScaleFilter
from vidattn.tracking.source import FrameSource, open_frame_source
from vidattn.tracking.synthetic import SyntheticSequence, make_sequence

__all__ = [
    "DCFConfig",
    "DCFTracker",
    "FrameSource",
    "ScaleConfig",
    "ScaleFilter",
    "SyntheticSequence",
    "evaluate",
    "iou_xywh",
    "make_sequence",
    "open_frame_source",
    "precision_at",
    "success_auc",
    "TrackRun",
    "track_stream",
    "write_outputs",
]
