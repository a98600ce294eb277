"""Trainers are plug-ins named in settings (FLYWHEEL_TRAINERS). A trainer turns the rows of
a dataset version into a model artifact; the built-in one fits scikit-learn on the feature
vectors. No Django here: the training service hands rows in and stores what comes out."""

import hashlib
import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class TrainingData:
    numeric: np.ndarray  # rows x numeric features, NaN where missing
    categorical: np.ndarray  # rows x categorical features (object), None where missing
    labels: np.ndarray  # the resolved labels (str)
    weights: np.ndarray  # how much each row counts, by the label's source
    # Per numeric feature, the (min, max) the project declares for it, or None.
    numeric_ranges: list[tuple[float, float] | None] | None = None


@dataclass
class Artifact:
    content: bytes
    sha256: str
    libraries: dict[str, str]  # what it takes to load it


class Model:
    """A trained model, loaded: predicts labels and their probabilities."""

    def __init__(self, estimator, classes: Sequence[str]):
        self.estimator = estimator
        self.classes = [str(c) for c in classes]

    def predict_proba(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(_design(numeric, categorical))

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Labels and the confidence of each."""
        probabilities = self.predict_proba(numeric, categorical)
        top = probabilities.argmax(axis=1)
        return [self.classes[i] for i in top], probabilities[np.arange(len(top)), top]


def _design(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    columns = [numeric.astype(float)] if numeric.size else []
    if categorical.size:
        columns.append(categorical.astype(object))
    if not columns:
        raise ValueError("The dataset has no features to train on.")
    return np.concatenate(columns, axis=1) if len(columns) > 1 else columns[0]


FEATURE_SCALINGS = ("standard", "max_abs", "range")


class SklearnTrainer:
    """Logistic regression on scaled numeric features and one-hot categories, each row
    weighted by its label's source (feedback counts less than an annotator)."""

    name = "sklearn"
    feature_scaling = "standard"  # or "max_abs" or "range" (retraining.feature_scaling)

    def train(self, data: TrainingData, *, seed: int = 0) -> tuple[Model, Artifact]:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import MaxAbsScaler, OneHotEncoder, StandardScaler

        if self.feature_scaling not in FEATURE_SCALINGS:
            raise ValueError(f"feature_scaling is one of {', '.join(FEATURE_SCALINGS)}, not {self.feature_scaling!r}.")
        if self.feature_scaling == "range":
            from flywheel.training.scaling import RangeScaler

            scaler = RangeScaler(data.numeric_ranges)
        else:
            scaler = StandardScaler() if self.feature_scaling == "standard" else MaxAbsScaler()
        n_numeric, n_categorical = data.numeric.shape[1], data.categorical.shape[1]
        if len(set(data.labels.tolist())) < 2:
            raise ValueError("Training needs at least two different labels.")
        parts = []
        if n_numeric:
            parts.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                               ("scale", scaler)]), list(range(n_numeric))))
        if n_categorical:
            parts.append(("categorical", Pipeline([
                ("impute", SimpleImputer(strategy="constant", fill_value="(missing)", missing_values=None)),
                ("encode", OneHotEncoder(handle_unknown="ignore")),
            ]), list(range(n_numeric, n_numeric + n_categorical))))
        estimator = Pipeline([
            ("features", ColumnTransformer(parts)),
            ("classify", LogisticRegression(max_iter=2000, C=1.0, random_state=seed)),
        ])
        estimator.fit(_design(data.numeric, data.categorical), data.labels.astype(str),
                      classify__sample_weight=data.weights)
        model = Model(estimator, estimator.classes_)
        return model, _artifact(model)


def _artifact(model: Model) -> Artifact:
    import sklearn

    buffer = io.BytesIO()
    pickle.dump({"estimator": model.estimator, "classes": model.classes}, buffer, protocol=5)
    content = buffer.getvalue()
    return Artifact(content=content, sha256=hashlib.sha256(content).hexdigest(),
                    libraries={"scikit-learn": sklearn.__version__, "numpy": np.__version__})


def load_model(content: bytes, *, sha256: str) -> Model:
    """A model from its artifact; refuses bytes whose hash is not the recorded one (the
    artifact is only ever unpickled after this check, from our own storage)."""
    if hashlib.sha256(content).hexdigest() != sha256:
        raise ValueError("The model artifact does not match its recorded SHA-256.")
    stored = pickle.loads(content)  # noqa: S301 - verified bytes written by SklearnTrainer
    return Model(stored["estimator"], stored["classes"])


class ExternalTrainer:
    """Training happens elsewhere: the run hands the dataset version's manifest to the
    project's retraining.external_url (a signed webhook) and waits for the trainer to
    report back through POST /api/v1/training-runs/{id}/complete/."""

    name = "external"

    def train(self, data: TrainingData, *, seed: int = 0):
        raise RuntimeError("An external trainer trains outside the service.")
