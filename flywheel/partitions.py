"""Weekly time partitions of the prediction log on PostgreSQL: their bounds, names and the
service that creates them ahead of the data. SQLite keeps one unpartitioned table.

The table is range-partitioned on `created_at` by week (Monday 00:00 UTC to the next
Monday), with a default partition that takes any `created_at` no weekly partition covers,
so an app's clock far off never fails an ingest. Why weekly and not daily is measured in
docs/figures.md (Partitions): lookups that cannot prune (by prediction id, by the app's
id) probe every partition, and 13 weeks of 90 days cost less than 90 days.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import structlog
from django.db import connection, transaction
from django.utils import timezone

log = structlog.get_logger(__name__)

TABLE = "flywheel_prediction"
DEFAULT_PARTITION = f"{TABLE}_default"
KEY_TABLE = "flywheel_predictionkey"
WEEKS_AHEAD = 4
# Partitions the conversion makes for the weeks of existing rows reach back this far at most;
# older rows stay in the default partition rather than making hundreds of tiny tables.
WEEKS_BACK_AT_CONVERSION = 104
# Serializes partition creation: the beat and a manual run never race to create one week.
_LOCK_KEY = 0x46_57_50_41  # "FWPA"


@dataclass(frozen=True, order=True)
class Week:
    start: date  # a Monday

    @classmethod
    def of(cls, moment: datetime | date) -> "Week":
        day = moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment
        return cls(day - timedelta(days=day.weekday()))

    @property
    def name(self) -> str:
        return f"{TABLE}_w{self.start:%Y%m%d}"

    @property
    def lower(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def upper(self) -> datetime:
        return self.lower + timedelta(days=7)

    def next(self) -> "Week":
        return Week(self.start + timedelta(days=7))


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE])
        return cursor.fetchone() is not None


def partitions_list() -> list[str]:
    """Names of the prediction table's partitions, the default one included; empty when the
    table is not partitioned (SQLite)."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [TABLE],
        )
        return [name for (name,) in cursor.fetchall()]


def partitions_rows() -> dict[str, int]:
    """Each partition's row count as PostgreSQL estimates it (exact counts would scan)."""
    if connection.vendor != "postgresql":
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [TABLE],
        )
        return dict(cursor.fetchall())


def week_partition_create(cursor, week: Week) -> bool:
    """Create the partition of one week unless it exists; returns whether it was made.

    Rows the default partition caught for that week move into the new table first: attaching
    a range the default partition holds rows of would fail. Runs inside the caller's
    transaction, so the move is all or nothing."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [week.name])
    if cursor.fetchone()[0]:
        return False
    cursor.execute(f'CREATE TABLE "{week.name}" (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE created_at >= %s AND created_at < %s RETURNING *) "
        f'INSERT INTO "{week.name}" SELECT * FROM moved',
        [week.lower, week.upper],
    )
    moved = cursor.rowcount
    cursor.execute(
        f'ALTER TABLE {TABLE} ATTACH PARTITION "{week.name}" FOR VALUES FROM (%s) TO (%s)', [week.lower, week.upper]
    )
    log.info("partitions.created", partition=week.name, moved_from_default=moved)
    return True


def prediction_partitions_ensure(*, now: datetime | None = None, weeks_ahead: int = WEEKS_AHEAD) -> list[str]:
    """Make sure the weekly partitions from this week to `weeks_ahead` weeks on exist, and
    give the recent weeks the default partition caught rows of (an app's late or backfilled
    predictions) partitions of their own, so whole weeks can be dropped later; returns the
    names it created. Safe to run any number of times, also at once (an advisory lock)."""
    if not is_partitioned():
        return []
    now = now or timezone.now()
    week = Week.of(now)
    weeks = []
    for _ in range(weeks_ahead + 1):
        weeks.append(week)
        week = week.next()
    oldest = Week.of(now - timedelta(weeks=WEEKS_BACK_AT_CONVERSION))
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        cursor.execute(
            f"SELECT DISTINCT date_trunc('week', created_at AT TIME ZONE 'UTC')::date "
            f"FROM {DEFAULT_PARTITION} WHERE created_at >= %s AND created_at < %s",
            [oldest.lower, weeks[0].lower],
        )
        caught = sorted(Week(start) for (start,) in cursor.fetchall())
        for week in [*caught, *weeks]:
            if week_partition_create(cursor, week):
                created.append(week.name)
    return created
