"""Pieces every app shares: the model base, the error body, JSON handling, logging."""
