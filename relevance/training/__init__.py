"""Fine-tuning: the split by query, the training batches and loop, calibration, weight mixes and the promotion gate."""
