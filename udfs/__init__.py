"""Text normalization, model loading, the pure batch scorer and the pandas UDF that adapts it."""
