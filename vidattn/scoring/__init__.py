"""Batch scoring of video archives, one module per part (`vidattn.apps.score` wires them to the command line).

- `inputs`: files, folders, globs, list files and tar shards to `InputItem` records; shards.
- `pipeline`: the per-video work in DataLoader workers (`ScoreDataset`, `score_source`, `error_record`).
- `model`: the checkpoint's `Classifier`, batched over uniform views.
- `runner`: `ScoreRun`, the main loop: batches, rows, worker-crash attribution.
- `store`: the SQLite `ResultStore`, its lock and the resume rule (`ResultStore.todo`).
- `export`: the merge of results databases into Parquet, CSV or JSONL.

Nothing is imported here, so `vidattn export` reads results databases without torch or the decoders.
"""
