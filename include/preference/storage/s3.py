"""A thin S3 client for the lake bucket: clear errors, paginated listings, batch deletes."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from include.preference.config import S3Settings
from include.preference.errors import ObjectNotFound, StorageAuthError, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# "403" is what a HEAD request reports: it has no body to carry the precise code.
AUTH_ERROR_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403"}
)
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class _StreamingUpload(io.RawIOBase):
    """The writable file of :meth:`ObjectStore.writer`."""

    def __init__(self, store: "ObjectStore", key: str, part_bytes: int) -> None:
        super().__init__()
        self.store, self.key, self.part_bytes = store, key, max(part_bytes, 5 * 1024 * 1024)
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer.extend(data)
        while len(self.buffer) >= self.part_bytes:
            self._send(bytes(self.buffer[: self.part_bytes]))
            del self.buffer[: self.part_bytes]
        return len(data)

    def _send(self, body: bytes) -> None:
        client, bucket = self.store.client, self.store.bucket
        with self.store._errors("upload", self.key):  # noqa: SLF001
            if self.upload_id is None:
                self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=self.key)["UploadId"]
            number = len(self.parts) + 1
            done = client.upload_part(
                Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            )
        self.parts.append({"PartNumber": number, "ETag": done["ETag"]})

    def finish(self) -> None:
        if self.upload_id is None:
            self.store.put_bytes(self.key, bytes(self.buffer))
            return
        if self.buffer:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        with self.store._errors("upload", self.key):  # noqa: SLF001
            self.store.client.complete_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
            )

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.store.client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
                )
            except Exception:  # noqa: BLE001 - the write's own error is the one to raise
                log.warning("could not abort the upload of %s", self.store.uri(self.key), exc_info=True)


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing."""

    key: str
    size: int
    etag: str


class ObjectStore:
    """The lake bucket, addressed by keys relative to the bucket root.

    Args:
        settings: endpoint, credentials and bucket.
        client: an existing boto3 S3 client (built from ``settings`` when omitted).
    """

    def __init__(self, settings: S3Settings, client: "S3Client | None" = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = client

    @property
    def client(self) -> "S3Client":
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.settings.endpoint_url,
                aws_access_key_id=self.settings.access_key_id,
                aws_secret_access_key=self.settings.secret_access_key,
                region_name=self.settings.region,
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path"},
                    connect_timeout=10,
                    max_pool_connections=32,
                    read_timeout=60,
                ),
            )
        return self._client

    def uri(self, key: str = "") -> str:
        """The ``s3://`` URI of a key."""
        return f"s3://{self.bucket}/{key}"

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        target = self.uri(key)
        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            message = error.response.get("Error", {}).get("Message", str(error))
            if code in AUTH_ERROR_CODES:
                raise StorageAuthError(
                    f"S3 refused the credentials while trying to {action} {target}: {code} ({message}). "
                    f"Using {self.settings.describe()}; check the access key and secret "
                    "(AIRFLOW_CONN_AWS_DEFAULT or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)."
                ) from error
            if code in NOT_FOUND_CODES:
                raise ObjectNotFound(f"{target} does not exist ({action})") from error
            raise StorageError(f"S3 could not {action} {target}: {code} {message}") from error
        except BotoCoreError as error:
            raise StorageError(
                f"S3 could not {action} {target}: {error}. Endpoint {self.settings.endpoint_url!r}; "
                "is the S3 service running (make status)?"
            ) from error

    def check(self) -> None:
        """Fail fast with a clear message when the bucket is unreachable or the keys are wrong."""
        # A listing (unlike HEAD) returns an error body, so the message can name the exact cause.
        with self._errors("list bucket"):
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) not in NOT_FOUND_CODES | {"NoSuchBucket"}:
                with self._errors("reach bucket"):
                    raise
        with self._errors("create bucket"):
            self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        with self._errors("write", key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        with self._errors("upload", key):
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})

    @contextmanager
    def writer(self, key: str, part_bytes: int = 16 * 1024 * 1024) -> Iterator[BinaryIO]:
        """A file to write ``key`` through, streamed to S3 in parts of ``part_bytes``.

        Small objects are one PUT; larger ones a multipart upload, completed when the block ends
        and aborted when it raises (nothing is left half-written under ``key``).
        """
        upload = _StreamingUpload(self, key, part_bytes)
        try:
            yield upload  # type: ignore[misc]
        except BaseException:
            upload.abort()
            raise
        upload.finish()

    def get_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("download", key):
            self.client.download_file(self.bucket, key, str(path))

    def exists(self, key: str) -> bool:
        try:
            with self._errors("look up", key):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return False
        return True

    def list_keys(self, prefix: str, delimiter: str | None = None) -> Iterator[str]:
        """Every key under ``prefix``, in lexicographic order.

        ``delimiter``: keys holding it after the prefix are rolled up into one common prefix each
        and not listed (S3's delimiter may be any string, e.g. ``/v-`` skips version folders).
        """
        for page in self._pages(prefix, delimiter=delimiter):
            for item in page.get("Contents", []):
                yield item["Key"]

    def list_objects(self, prefix: str) -> Iterator["ObjectInfo"]:
        """Every object under ``prefix`` with its size and ETag, in lexicographic order."""
        for page in self._pages(prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], int(item["Size"]), str(item.get("ETag", "")).strip('"'))

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes ``start`` .. ``end`` (inclusive) of an object; a negative ``start`` counts from its end."""
        spec = f"bytes={start}" if start < 0 else f"bytes={start}-{'' if end is None else end}"
        with self._errors("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=key, Range=spec)["Body"].read()

    def copy(self, source: str, target: str, source_bucket: str | None = None) -> None:
        """Copy an object into this bucket, server-side (no bytes pass through this process).

        ``source_bucket``: where ``source`` lives, on the same server (default: this bucket).
        """
        with self._errors("copy", source):
            self.client.copy({"Bucket": source_bucket or self.bucket, "Key": source}, self.bucket, target)

    def s3a(self, key: str = "") -> str:
        """The ``s3a://`` URI of a key: how Spark's S3 connector addresses it."""
        return f"s3a://{self.bucket}/{key}"

    def list_prefixes(self, prefix: str) -> list[str]:
        """The immediate "folders" under ``prefix`` (which should end with ``/``)."""
        found: list[str] = []
        for page in self._pages(prefix, delimiter="/"):
            found.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        return found

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        with self._errors("list", prefix):
            yield from paginator.paginate(**kwargs)

    def delete_keys(self, keys: list[str]) -> None:
        """Delete keys in batches of 1,000 (the S3 limit); missing keys are not an error."""
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            with self._errors("delete", batch[0]):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            errors = response.get("Errors", [])
            if errors:
                raise StorageError(f"S3 could not delete {len(errors)} keys, first: {errors[0]}")
