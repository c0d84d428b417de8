"""User-facing jobs: probe, key frames, tracking and archive scoring. The CLI calls these."""
