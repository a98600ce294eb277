"""Trained models and evaluation records on object storage: stored under their hash, loaded
only after the hash matches."""

import hashlib

import orjson

from common.errors import DomainError
from common.storage import ObjectMissing, get_storage, key
from flywheel.models import ModelVersion, Project, TrainingRun
from flywheel.training.trainers import Artifact, Model, load_model


def artifact_store(project: Project, artifact: Artifact) -> str:
    """Store the artifact under its hash, with the libraries it needs beside it. Storing the
    same bytes twice (a retried stage) writes nothing new."""
    storage = get_storage()
    artifact_key = key("models", project.slug, f"{artifact.sha256}.pkl")
    if not storage.exists(artifact_key):
        storage.put(artifact_key, artifact.content)
    sidecar_key = key("models", project.slug, f"{artifact.sha256}.json")
    if not storage.exists(sidecar_key):
        storage.put(sidecar_key, orjson.dumps({"sha256": artifact.sha256, "libraries": artifact.libraries,
                                                "format": "pickle"}))
    return storage.uri(artifact_key)


_loaded: dict[str, Model] = {}


def model_artifact_bytes(model_version: ModelVersion) -> bytes:
    """The stored artifact of a model trained here, checked against its recorded hash."""
    sha = model_version.artifact_sha256
    if not sha:
        raise DomainError("no_artifact", f"Model {model_version.name} was not trained here: it has no artifact.",
                          status_code=404)
    try:
        content = get_storage().get(key("models", model_version.project.slug, f"{sha}.pkl"))
    except ObjectMissing:
        raise DomainError("artifact_missing", f"The artifact of model {model_version.name} is missing from storage.",
                          status_code=502) from None
    if artifact_digest(content) != sha:
        raise DomainError("artifact_corrupt", f"The artifact of model {model_version.name} does not match its hash.",
                          status_code=502)
    return content


def artifact_digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def model_load(model_version: ModelVersion) -> Model:
    """A trained model from its artifact, verified against its recorded hash (kept in memory)."""
    sha = model_version.artifact_sha256
    if sha not in _loaded:
        _loaded[sha] = load_model(model_artifact_bytes(model_version), sha256=sha)
    return _loaded[sha]


def evaluation_key(run: TrainingRun) -> str:
    return key("training", run.project.slug, f"run-{run.number}-evaluation.json")


def evaluation_store(run: TrainingRun, evaluated: dict) -> None:
    get_storage().put(evaluation_key(run), orjson.dumps(evaluated, option=orjson.OPT_SERIALIZE_NUMPY))


def evaluation_load(run: TrainingRun) -> dict:
    return orjson.loads(get_storage().get(evaluation_key(run)))
