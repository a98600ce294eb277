"""Django's PostgreSQL backend, taught that a partitioned table's primary key is wider than
its `id` (flywheel.partitions)."""
