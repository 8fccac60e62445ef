"""Data in: the demo and scale generators, and the readers and importers of real data."""
