"""Trainer plug-ins for tests (named in FLYWHEEL_TRAINERS by the tests that use them)."""

import time

from flywheel.training.trainers import SklearnTrainer


class SlowTrainer(SklearnTrainer):
    """The built-in trainer, after a pause long enough for a test to kill its worker."""

    name = "slow"
    pause_seconds = 8.0

    def train(self, data, *, seed: int = 0):
        time.sleep(self.pause_seconds)
        return super().train(data, seed=seed)
