"""Physiological-signal extractors (the ``physio`` modality)."""
