"""Fine-tuning: the pipeline (the finetune job's whole compute step), the split by query, the training batches and
loop with its progress, the typed training history, calibration, weight mixes, the promotion gate and the card."""
