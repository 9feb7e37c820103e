"""The pipeline: inputs -> batches -> engine -> records; the run API every front end calls."""
