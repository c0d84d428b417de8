"""Where and when a trained model looks: attention maps, temporal weights and glimpse picks, drawn.

- `maps`: the attention layers' recorded weights as maps over the input frames; `explain(model, clip)`
  (also `vidattn.explain`) returns them as numpy arrays for a notebook.
- `video`: one whole video through a checkpoint (`explain_video`): the prediction as `vidattn score` makes
  it, and per sample the temporal weight, each layer's map and the picks, at true frame indices.
- `render` and `outputs`: the overlay video, contact sheet, plot and ``explain.json`` of `vidattn explain`.
"""

from vidattn.explainer.maps import Explanation, MapLayer, explain, map_layers, select_layers
from vidattn.explainer.video import ExplainModel, ExplainOptions, VideoExplanation, explain_video

__all__ = [
    "ExplainModel",
    "ExplainOptions",
    "Explanation",
    "MapLayer",
    "VideoExplanation",
    "explain",
    "explain_video",
    "map_layers",
    "select_layers",
]
