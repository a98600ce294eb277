"""The retention policy: how long raw predictions stay in the database, and whether they go
to the archive when they leave."""

from dataclasses import dataclass

from common.policy import Policy


@dataclass(frozen=True)
class RetentionPolicy(Policy):
    # Predictions made more than this many UTC days ago, and no longer needed by the loop,
    # leave the database. None keeps them forever.
    raw_days: int | None = 90
    # Written to the Parquet archive before they leave; False removes them unarchived.
    archive: bool = True
