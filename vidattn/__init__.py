"""vidattn: video understanding with attention."""

__version__ = "0.1.0"
