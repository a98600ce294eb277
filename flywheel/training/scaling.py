"""Feature scaling by declared ranges, for the built-in trainer. Imported only where a model
is trained or loaded: it brings scikit-learn with it."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class RangeScaler(TransformerMixin, BaseEstimator):
    """Maps each numeric feature from its declared range onto [0, 1]; a feature without one
    is divided by its largest magnitude in the training rows, as max-abs scaling does.

    A scale learned from the labeled rows depends on which rows got labeled. Uncertainty
    routing labels the odd ones: a few noisy digits set a border pixel's largest value, and
    the pixel's weight with it. A declared range is the same whatever was sampled."""

    def __init__(self, ranges=None):
        self.ranges = ranges  # per column: (min, max), or None where no range is declared

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        if self.ranges is not None and len(self.ranges) != X.shape[1]:
            raise ValueError(f"{len(self.ranges)} ranges for {X.shape[1]} numeric features.")
        largest = np.nanmax(np.abs(X), axis=0) if len(X) else np.zeros(X.shape[1])
        self.offset_ = np.zeros(X.shape[1])
        self.scale_ = np.where(largest > 0, largest, 1.0)
        for column, bounds in enumerate(self.ranges or []):
            if bounds is not None:
                low, high = bounds
                self.offset_[column], self.scale_[column] = low, high - low
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return (np.asarray(X, dtype=float) - self.offset_) / self.scale_
