"""Scoring segmentations against references (torch-free)."""
