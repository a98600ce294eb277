"""Object storage for dataset versions and model artifacts: one interface, two backends
(the local file system, the embedded default; S3 through boto3, for AWS S3 and MinIO).

Keys are built only by `key()` from validated parts, so nothing a request sends can
reach outside the storage root or the bucket prefix. Large objects move as files, in
chunks, never whole in memory."""

import base64
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

KEY_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")

# Objects at least this large go up in parts: a failed part is retried alone, and no
# single request has to carry a whole shard.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
COPY_CHUNK = 1024 * 1024


class StorageError(Exception):
    """The store could not be reached or refused an operation."""


class StorageUnavailable(StorageError):
    """A failure that may pass: the store is unreachable, timed out or answered 5xx.
    Worth retrying, unlike a refusal (no such bucket, access denied)."""


class ObjectExists(StorageError):
    """A conditional write found the key already taken."""


class ObjectMissing(StorageError):
    pass


def key(*parts: str) -> str:
    """A storage key from parts that each pass KEY_PART_RE: no separators, no '..'."""
    for part in parts:
        if not isinstance(part, str) or not KEY_PART_RE.match(part) or ".." in part:
            raise ValueError(f"Invalid storage key part: {part!r}")
    return "/".join(parts)


class Storage:
    scheme = ""

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sha256: str | None = None) -> None:
        """Store `data` under `key`. With `if_absent`, raise ObjectExists instead of
        replacing an object that is already there (the store decides, atomically). With
        `sha256` (hex), the store checks the bytes it received against it where it can, and
        keeps it for matches()."""
        raise NotImplementedError

    def put_file(self, key: str, path: Path, *, if_absent: bool = False, sha256: str | None = None) -> None:
        """Store a local file, streamed (in parts when it is large)."""
        raise NotImplementedError

    def matches(self, key: str, *, size: int, sha256: str) -> bool:
        """Whether the object under `key` exists with this size and SHA-256, as far as the
        store can tell without downloading it (an object put with `sha256` can tell)."""
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def get_file(self, key: str, path: Path) -> None:
        """Download an object to a local file, streamed; the file appears only when complete."""
        raise NotImplementedError

    def size(self, key: str) -> int:
        """The object's size in bytes; ObjectMissing if there is none."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str) -> Iterator[str]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def uri(self, key: str) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raise StorageError unless the store is reachable and writable."""
        raise NotImplementedError


def _download_aside(path: Path, write) -> None:
    """Run `write(handle)` into a temporary file beside `path`, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class FileStorage(Storage):
    scheme = "file"

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"Key escapes the storage root: {key!r}")
        return path

    def _publish(self, tmp: str, path: Path, key: str, if_absent: bool) -> None:
        if if_absent:
            try:
                os.link(tmp, path)  # atomic, and fails if the name exists
            except FileExistsError:
                raise ObjectExists(key) from None
        else:
            os.replace(tmp, path)

    def _put_with(self, key: str, write, if_absent: bool) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write aside, then move into place: a reader never sees half an object.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except OSError as exc:
            raise StorageError(f"Cannot write {key}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            self._publish(tmp, path, key, if_absent)
        except OSError as exc:
            raise StorageError(f"Cannot write {key}: {exc}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sha256: str | None = None) -> None:
        self._put_with(key, lambda handle: handle.write(data), if_absent)

    def put_file(self, key: str, path: Path, *, if_absent: bool = False, sha256: str | None = None) -> None:
        def copy(handle):
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, COPY_CHUNK)

        self._put_with(key, copy, if_absent)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)

        def copy(handle):
            with open(source, "rb") as stream:
                shutil.copyfileobj(stream, handle, COPY_CHUNK)

        try:
            _download_aside(path, copy)
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def matches(self, key: str, *, size: int, sha256: str) -> bool:
        path = self._path(key)
        try:
            if path.stat().st_size != size:
                return False
            with open(path, "rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest() == sha256
        except FileNotFoundError:
            return False

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
        for path in sorted(start.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".tmp-") and name.startswith(prefix):
                yield name

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".readyz"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"Storage root {self.root} is not writable: {exc}") from exc


_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_EXISTS_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                              "RequestTimeTooSkewed", "OperationAborted", "503", "500"})


class S3Storage(Storage):
    scheme = "s3"

    def __init__(self, *, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str = "us-east-1", access_key: str | None = None, secret_key: str | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD, multipart_chunk: int = MULTIPART_CHUNK,
                 max_attempts: int = 3):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=3,
                          read_timeout=30, max_pool_connections=16,
                          s3={"addressing_style": "path"} if endpoint_url else None),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc, key: str = "") -> StorageError:
        """The StorageError for a boto3 failure: ObjectMissing, ObjectExists, StorageUnavailable
        (worth a retry) or a plain StorageError (a refusal)."""
        from botocore.exceptions import ClientError

        where = f"S3 {self.bucket}/{self._key(key)}" if key else f"S3 {self.bucket}"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in _MISSING_CODES:
                return ObjectMissing(key)
            if code in _EXISTS_CODES or status == 412:
                return ObjectExists(key)
            if code in _TRANSIENT_CODES or status >= 500:
                return StorageUnavailable(f"{where}: {exc}")
            return StorageError(f"{where}: {exc}")
        # BotoCoreError: no answer at all (connection refused, timeout, closed connection).
        return StorageUnavailable(f"{where}: {exc}")

    def _call(self, key: str, method, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    @staticmethod
    def _integrity(sha256: str | None, *, whole: bool = True) -> dict:
        # The SHA-256 we computed goes with the object: S3 refuses the upload if what it
        # received hashes otherwise (and boto3 need not hash the bytes once more). A
        # multipart upload can only carry per-part checksums, which boto3 computes. The hex
        # digest is also kept as metadata, for matches().
        if sha256 is None:
            return {}
        integrity = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256}}
        if whole:
            integrity["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        return integrity

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sha256: str | None = None) -> None:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        self._call(key, self.client.put_object, Key=self._key(key), Body=data, **extra, **self._integrity(sha256))

    def put_file(self, key: str, path: Path, *, if_absent: bool = False, sha256: str | None = None) -> None:
        size = os.path.getsize(path)
        if size < self.multipart_threshold:
            extra = {"IfNoneMatch": "*"} if if_absent else {}
            with open(path, "rb") as body:
                self._call(key, self.client.put_object, Key=self._key(key), Body=body, **extra,
                           **self._integrity(sha256))
            return
        self._put_multipart(key, path, if_absent, sha256)

    def matches(self, key: str, *, size: int, sha256: str) -> bool:
        try:
            head = self._call(key, self.client.head_object, Key=self._key(key), ChecksumMode="ENABLED")
        except ObjectMissing:
            return False
        if head["ContentLength"] != size:
            return False
        stored = head.get("ChecksumSHA256")
        # A multipart object (its ETag ends in -<parts>) carries a checksum of its parts'
        # checksums, which is not the SHA-256 of its bytes.
        multipart = "-" in head.get("ETag", "").strip('"')
        if stored and not multipart:
            return stored == base64.b64encode(bytes.fromhex(sha256)).decode()
        # Without a whole-object checksum, the digest recorded at upload vouches for it; an
        # object put by other means has none and is not trusted.
        return head.get("Metadata", {}).get("sha256") == sha256

    def _put_multipart(self, key: str, path: Path, if_absent: bool, sha256: str | None) -> None:
        upload = self._call(key, self.client.create_multipart_upload, Key=self._key(key),
                            **self._integrity(sha256, whole=False))
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(path, "rb") as source:
                number = 1
                while chunk := source.read(self.multipart_chunk):
                    answer = self._call(key, self.client.upload_part, Key=self._key(key), UploadId=upload_id,
                                        PartNumber=number, Body=chunk,
                                        **({"ChecksumAlgorithm": "SHA256"} if sha256 else {}))
                    part = {"PartNumber": number, "ETag": answer["ETag"]}
                    if answer.get("ChecksumSHA256"):
                        part["ChecksumSHA256"] = answer["ChecksumSHA256"]
                    parts.append(part)
                    number += 1
            extra = {"IfNoneMatch": "*"} if if_absent else {}
            self._call(key, self.client.complete_multipart_upload, Key=self._key(key), UploadId=upload_id,
                       MultipartUpload={"Parts": parts}, **extra)
        except BaseException:
            # Parts of an abandoned upload are billed until aborted; the store may be the
            # reason we failed, so aborting is best effort.
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original failure is the one to report
                pass
            raise

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        answer = self._call(key, self.client.get_object, Key=self._key(key))
        try:
            return answer["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    def get_file(self, key: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        answer = self._call(key, self.client.get_object, Key=self._key(key))

        def copy(handle):
            for chunk in answer["Body"].iter_chunks(COPY_CHUNK):
                handle.write(chunk)

        try:
            _download_aside(path, copy)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    def size(self, key: str) -> int:
        return self._call(key, self.client.head_object, Key=self._key(key))["ContentLength"]

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
            return True
        except ObjectMissing:
            return False

    def list(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            ):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    def delete(self, key: str) -> None:
        self._call(key, self.client.delete_object, Key=self._key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def check(self) -> None:
        self._call("", self.client.head_bucket)


_cache: dict[tuple, Storage] = {}
_cache_lock = threading.Lock()


def get_storage() -> Storage:
    """The configured store (FLYWHEEL_STORAGE_BACKEND). Looked up from settings on each
    call, so that tests and commands can point it elsewhere; a store is built once per
    distinct configuration (a boto3 client takes tens of milliseconds to make)."""
    backend = settings.FLYWHEEL_STORAGE_BACKEND
    if backend == "s3":
        config = ("s3", settings.S3_BUCKET, settings.S3_PREFIX, settings.S3_ENDPOINT_URL, settings.S3_REGION,
                  settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY, settings.S3_MAX_ATTEMPTS)
    elif backend == "file":
        config = ("file", str(settings.FLYWHEEL_STORAGE_ROOT))
    else:
        raise ValueError(f"Unknown FLYWHEEL_STORAGE_BACKEND {backend!r}")
    with _cache_lock:
        storage = _cache.get(config)
        if storage is None:
            if backend == "s3":
                storage = S3Storage(bucket=config[1], prefix=config[2], endpoint_url=config[3], region=config[4],
                                    access_key=config[5], secret_key=config[6], max_attempts=config[7])
            else:
                storage = FileStorage(Path(config[1]))
            _cache[config] = storage
        return storage
