"""The base package: where files live (storage), Delta tables under one warehouse root (delta), and the errors a
job stops with (errors). It imports nothing of the project but `schemas`; everything else builds on it."""
