"""Training: strategy selection, the loop, summaries."""
