"""Losses, one module per method."""
