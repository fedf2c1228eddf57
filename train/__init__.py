"""Training side: datasets, clip pipelines, the trainer and the synthetic motion data."""
