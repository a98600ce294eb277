"""A dataset version's rows (and stored predictions' features) as the arrays trainers take."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flywheel.datasets import selectors as dataset_selectors
from flywheel.datasets import shards
from flywheel.models import DatasetVersion, Prediction, Project
from flywheel.training.trainers import TrainingData


@dataclass
class Rows:
    numeric: np.ndarray
    categorical: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    prediction_ids: np.ndarray  # the predictions' row ids (primary keys)

    def training_data(self, *, numeric_ranges=None) -> TrainingData:
        return TrainingData(numeric=self.numeric, categorical=self.categorical, labels=self.labels,
                            weights=self.weights, numeric_ranges=numeric_ranges)


def rows_without(rows: Rows, prediction_ids: set[int]) -> Rows:
    if not prediction_ids:
        return rows
    keep = ~np.isin(rows.prediction_ids, list(prediction_ids))
    return Rows(numeric=rows.numeric[keep], categorical=rows.categorical[keep], labels=rows.labels[keep],
                weights=rows.weights[keep], prediction_ids=rows.prediction_ids[keep])


def feature_names(project: Project) -> tuple[list[str], list[str]]:
    numeric = [f["name"] for f in project.features if f["type"] == "numeric"]
    categorical = [f["name"] for f in project.features if f["type"] == "categorical"]
    return numeric, categorical


def numeric_ranges(project: Project) -> list[tuple[float, float] | None]:
    """The declared (min, max) of each numeric feature, in the order of the rows' columns."""
    return [(f["min"], f["max"]) if "min" in f else None for f in project.features if f["type"] == "numeric"]


def version_rows(version: DatasetVersion, *, split: str | tuple[str, ...] | None) -> Rows:
    splits = (split,) if isinstance(split, str) else split
    tables = [table for s in (splits or (None,))
              for table in dataset_selectors.version_partitions(version=version, split=s)]
    table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    return _rows_from_table(version.project, table)


def _rows_from_table(project: Project, table: pa.Table | None) -> Rows:
    numeric_names, categorical_names = feature_names(project)
    n = 0 if table is None else table.num_rows

    def column(name, kind):
        column_name = shards.feature_column(name)
        if table is None or column_name not in table.column_names:
            return np.full(n, np.nan) if kind == "numeric" else np.full(n, None, dtype=object)
        values = table.column(column_name)
        if kind == "numeric":
            return values.to_numpy(zero_copy_only=False).astype(float)
        return np.array(values.to_pylist(), dtype=object)

    numeric = np.column_stack([column(c, "numeric") for c in numeric_names]) if numeric_names else np.empty((n, 0))
    categorical = (np.column_stack([column(c, "categorical") for c in categorical_names])
                   if categorical_names else np.empty((n, 0), dtype=object))
    if table is None:
        return Rows(numeric, categorical, np.array([], dtype=object), np.array([]), np.array([], dtype=np.int64))
    return Rows(numeric=numeric, categorical=categorical,
                labels=np.array(table.column("label").to_pylist(), dtype=object),
                weights=table.column("weight").to_numpy(zero_copy_only=False).astype(float),
                prediction_ids=table.column("row_id").to_numpy(zero_copy_only=False).astype(np.int64))


def prediction_rows(project: Project, prediction_ids: list[int]) -> Rows:
    """Features of stored predictions (gold answers outside the dataset) as arrays."""
    numeric_names, categorical_names = feature_names(project)
    found = list(Prediction.objects.filter(project=project, pk__in=prediction_ids).values_list("id", "features"))
    n = len(found)
    numeric = np.array([[float(f.get(c)) if f.get(c) is not None else np.nan for c in numeric_names]
                        for _, f in found], dtype=float).reshape(n, len(numeric_names))
    categorical = np.array([[f.get(c) for c in categorical_names] for _, f in found],
                           dtype=object).reshape(n, len(categorical_names))
    return Rows(numeric=numeric, categorical=categorical, labels=np.array([], dtype=object), weights=np.ones(n),
                prediction_ids=np.array([pid for pid, _ in found], dtype=np.int64))
