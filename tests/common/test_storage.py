"""Object storage: the same behaviour from both backends (local files; S3 over HTTP to
the local S3 server), conditional writes, large objects in parts, keys from validated parts."""

import pytest

from common.storage import (
    FileStorage,
    ObjectExists,
    ObjectMissing,
    S3Storage,
    StorageError,
    StorageUnavailable,
    get_storage,
    key,
)
from tests.s3 import S3Server


@pytest.fixture(params=["file", "s3"])
def storage(request, settings, tmp_path):
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    return get_storage()


def test_put_get_size_exists_list_delete(storage):
    storage.put("a/one.bin", b"1" * 10)
    storage.put("a/two.bin", b"22")
    assert storage.get("a/one.bin") == b"1" * 10
    assert storage.size("a/two.bin") == 2
    assert storage.exists("a/one.bin") and not storage.exists("a/three.bin")
    assert sorted(storage.list("a/")) == ["a/one.bin", "a/two.bin"]
    storage.delete("a/one.bin")
    assert not storage.exists("a/one.bin")
    with pytest.raises(ObjectMissing):
        storage.get("a/one.bin")
    with pytest.raises(ObjectMissing):
        storage.size("a/one.bin")


def test_a_conditional_put_never_replaces_an_object(storage):
    storage.put("manifests/1.json", b"first", if_absent=True)
    with pytest.raises(ObjectExists):
        storage.put("manifests/1.json", b"second", if_absent=True)
    with pytest.raises(ObjectExists):
        storage.put_file("manifests/1.json", _file(b"third"), if_absent=True)
    assert storage.get("manifests/1.json") == b"first"
    storage.put("manifests/1.json", b"replaced")  # an unconditional put does replace
    assert storage.get("manifests/1.json") == b"replaced"


def test_files_stream_up_and_down(storage, tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    storage.put_file("big/object.bin", source)
    target = tmp_path / "down" / "object.bin"
    storage.get_file("big/object.bin", target)
    assert target.read_bytes() == data
    assert not list(target.parent.glob(".tmp-*"))
    with pytest.raises(ObjectMissing):
        storage.get_file("big/nothing.bin", tmp_path / "down" / "nothing.bin")
    assert not (tmp_path / "down" / "nothing.bin").exists()


def test_large_objects_go_up_in_parts(s3_server, s3_bucket, tmp_path):
    storage = S3Storage(bucket=s3_bucket, endpoint_url=s3_server.endpoint_url, access_key="k", secret_key="s",
                        multipart_threshold=5 * 1024 * 1024, multipart_chunk=5 * 1024 * 1024)
    data = b"".join(i.to_bytes(4, "big") for i in range(3 * 1024 * 1024))  # 12 MiB: three parts
    source = tmp_path / "large.bin"
    source.write_bytes(data)
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    storage.put_file("large.bin", source, sha256=digest)
    assert storage.matches("large.bin", size=len(data), sha256=digest)
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="large.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # S3 names multipart objects' ETags by their part count
    assert storage.get("large.bin") == data
    with pytest.raises(ObjectExists):
        storage.put_file("large.bin", source, if_absent=True)
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_bucket)
    assert not uploads.get("Uploads"), "a refused multipart upload must be aborted, not left behind"


def test_keys_are_built_from_validated_parts_only():
    assert key("datasets", "digits", "shards", "ab12.parquet") == "datasets/digits/shards/ab12.parquet"
    for bad in ["..", "a/b", "", ".hidden", "a\\b", "x" * 200, "a..b", None, 3]:
        with pytest.raises(ValueError):
            key("datasets", bad)


def test_file_backend_refuses_keys_outside_its_root(tmp_path):
    storage = FileStorage(tmp_path / "root")
    with pytest.raises(ValueError):
        storage.put("../escape", b"x")


def test_an_unreachable_store_is_a_transient_failure(tmp_path):
    server = S3Server()  # never started: nothing listens on its port
    storage = S3Storage(bucket="flywheel-test", endpoint_url=server.endpoint_url, access_key="k", secret_key="s",
                        max_attempts=1)
    for call in (lambda: storage.put("k", b"x"), lambda: storage.get("k"), lambda: storage.size("k"),
                 storage.check):
        with pytest.raises(StorageUnavailable):
            call()


def test_a_refusal_is_not_transient(s3_server, s3_bucket):
    storage = get_storage()
    storage.client.delete_bucket(Bucket=s3_bucket)
    with pytest.raises(StorageError) as raised:
        storage.put("k", b"x")
    assert not isinstance(raised.value, StorageUnavailable)


def _file(data: bytes):
    import tempfile
    from pathlib import Path

    handle = tempfile.NamedTemporaryFile(delete=False)
    handle.write(data)
    handle.close()
    return Path(handle.name)


def test_matches_tells_an_intact_object_from_a_replaced_one(storage):
    import hashlib

    data = b"shard bytes" * 100
    digest = hashlib.sha256(data).hexdigest()
    storage.put("shards/x", data, sha256=digest)
    assert storage.matches("shards/x", size=len(data), sha256=digest)
    assert not storage.matches("shards/x", size=len(data) + 1, sha256=digest)
    assert not storage.matches("shards/none", size=len(data), sha256=digest)
    storage.put("shards/x", data[::-1])  # same size, other bytes, put by someone else
    assert not storage.matches("shards/x", size=len(data), sha256=digest)
