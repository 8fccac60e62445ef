"""Limits of what an input row may hold, shared by the schemas and the importers (no Spark here)."""

# purity: no pyspark torch transformers

MAX_POSITION = 10_000            # a 1-based rank beyond this is not a position a user saw
MIN_EVENT_TIME = "2000-01-01"    # UTC; earlier timestamps (epoch 0, -1) are placeholders, not events
MAX_EVENT_LEAD_DAYS = 1          # an event more than a day after the import ran lies in the future
