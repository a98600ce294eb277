"""Django's PostgreSQL backend with one change: queries never group by a partitioned
table's `id` alone in place of its columns.

Django groups an aggregate query that selects a joined model's columns by that model's
primary key only, counting on PostgreSQL's rule that the other columns depend on it. A
partitioned table's primary key must include the partition column (the predictions'
is (id, created_at)), so PostgreSQL refuses that query; for the models named in
PARTITIONED_TABLES Django groups by every selected column instead.
"""

from django.db.backends.postgresql import base, features

PARTITIONED_TABLES = frozenset({"flywheel_prediction"})


class DatabaseFeatures(features.DatabaseFeatures):
    def allows_group_by_selected_pks_on_model(self, model):
        return model._meta.db_table not in PARTITIONED_TABLES and super().allows_group_by_selected_pks_on_model(model)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures
