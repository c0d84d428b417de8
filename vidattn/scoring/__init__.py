"""Batch scoring of video archives: inputs, per-video work, the SQLite results store and export.

`vidattn.apps.score` runs the job; these modules are its parts.
"""

from vidattn.scoring.export import export_results, resolve_databases
from vidattn.scoring.inputs import InputItem, expand_inputs, shard_of
from vidattn.scoring.pipeline import DecodeSpec, ScoreDataset, score_source
from vidattn.scoring.store import COLUMNS, ResultStore, shard_db_path

__all__ = [
    "COLUMNS",
    "DecodeSpec",
    "InputItem",
    "ResultStore",
    "ScoreDataset",
    "expand_inputs",
    "export_results",
    "resolve_databases",
    "score_source",
    "shard_db_path",
    "shard_of",
]
