"""Objects on any S3-compatible store (R2, AWS S3, MinIO) through aiobotocore.

One client (with its pool of kept-alive connections) per connection entry, shared by every
binding on it. A put or a part is spooled to a temp file under the binding's state folder while
its digests are computed: S3 needs the length up front, and a checksum mismatch must store
nothing, so nothing reaches the bucket before the bytes are known to be right. A get streams the
response body through in chunks. The binding's `prefix` is prepended to every key.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from bindingd.config.model import Binding, Connection
from bindingd.domain import objects
from bindingd.domain.objects import (
    CHUNK_BYTES,
    BodyChunk,
    Conditional,
    Digests,
    HttpMetadata,
    ObjectInfo,
    ObjectListing,
    ObjectRead,
    PutOptions,
    RangeSpec,
)
from bindingd.errors import BindingdError, backend_unavailable, invalid_argument, permission_denied
from bindingd.providers.bodies import remove_leftovers, spool_body
from bindingd.providers.connections import ProviderContext
from bindingd.providers.local.sqlite import private_folder
from bindingd.providers.s3.client import S3Client, code_of, endpoint_of, map_error, timeout_of

# What S3 reports as the content type of an object stored without one; R2 reports none.
S3_DEFAULT_CONTENT_TYPE = "binary/octet-stream"
# Metadata heads of a list that asked for `include`, run at once.
LIST_HEADS_IN_FLIGHT = 16
HTTP_TO_S3 = {
    "content_type": "ContentType",
    "content_language": "ContentLanguage",
    "content_disposition": "ContentDisposition",
    "content_encoding": "ContentEncoding",
    "cache_control": "CacheControl",
}
# S3 keeps no sha384 or sha512 of an object: a verified one is kept in its user metadata under
# these names (hidden from custom metadata), so head, get and list answer it as R2 does.
DIGEST_METADATA = {"sha384": "bindingd-sha384", "sha512": "bindingd-sha512"}
DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}
# What S3 says of a call's arguments (a range, a part list): the caller's mistake.
INVALID_CODES = {"InvalidRange", "InvalidArgument", "InvalidPart", "InvalidPartOrder", "EntityTooSmall"}


def _ms(when: dt.datetime) -> int:
    # Whole seconds: HEAD answers carry HTTP dates, so every answer agrees with the others.
    return int(when.timestamp()) * 1000


def _etag(raw: str) -> str:
    return raw.strip('"')


def _version(response: Mapping[str, Any], etag: str, uploaded: int) -> str:
    """The S3 version id when the bucket keeps versions; otherwise one derived from the write."""
    version = response.get("VersionId")
    if version and version != "null":
        return str(version)
    return hashlib.md5(f"{etag}:{uploaded}".encode()).hexdigest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3Objects:
    """The s3 objects provider: one bucket (and key prefix) per binding."""

    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        assert binding.connection is not None
        self.connection: Connection = binding.connection
        self.context = context
        self.bucket: str = binding.options["bucket"]
        self.prefix: str = binding.options.get("prefix") or ""
        self.endpoint = endpoint_of(self.connection)
        self.timeout = timeout_of(self.connection)
        self.spool = context.state_dir / "objects" / binding.name / "spool"
        self._client: S3Client | None = None
        # A HEAD answers 404 alike for a missing key and a missing bucket: the first miss checks
        # the bucket once, so a wrong `bucket` is reported by name rather than as "not found".
        self._bucket_seen = False

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> S3Objects:
        return cls(binding, context)

    async def start(self) -> None:
        private_folder(self.spool)
        remove_leftovers(self.spool)
        self._client = await self.context.connections.acquire(self.connection, S3Client)

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
            await self.context.connections.release(self.connection)

    @property
    def s3(self) -> Any:
        assert self._client is not None, "provider not started"
        return self._client.s3

    async def check(self) -> str:
        try:
            await self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if code_of(e) in ("404", "NoSuchBucket", "NotFound"):
                raise self._no_bucket() from e
            raise self._error(e, "probe") from e
        except (TimeoutError, BotoCoreError, OSError) as e:
            raise self._error(e, "probe") from e
        return f"bucket {self.bucket} at {self.endpoint}"

    # --- errors --------------------------------------------------------------------------------

    def _no_bucket(self) -> BindingdError:
        return backend_unavailable(
            f'bucket "{self.bucket}" does not exist at {self.endpoint}; create it or fix the binding\'s '
            "`bucket` in bindingd.yaml"
        )

    def _error(self, e: BaseException, operation: str) -> BindingdError:
        """An S3 failure as the error table's reason: what concerns this binding's bucket or the
        call's arguments here, the rest is the connection's (`client.map_error`)."""
        if isinstance(e, ClientError):
            code = code_of(e)
            message = e.response.get("Error", {}).get("Message") or code
            if code == "NoSuchBucket":
                return self._no_bucket()
            if code in DENIED_CODES:
                return permission_denied(
                    f'connection "{self.connection.name}" may not {operation} in bucket "{self.bucket}": '
                    f"{code} ({message})"
                )
            if code in INVALID_CODES:
                return invalid_argument(f"s3 refused the {operation}: {code} ({message})")
        return map_error(e, self.connection, operation)

    # --- reads ---------------------------------------------------------------------------------

    def _info(
        self, key: str, response: Mapping[str, Any], *, http: bool = True, custom: bool = True
    ) -> ObjectInfo:
        etag = _etag(response["ETag"])
        uploaded = _ms(response["LastModified"])
        checksums: dict[str, bytes] = {}
        if "-" not in etag:
            checksums["md5"] = bytes.fromhex(etag)
        for name, field in (("sha1", "ChecksumSHA1"), ("sha256", "ChecksumSHA256")):
            value = response.get(field)
            if value and "-" not in value:
                checksums[name] = base64.b64decode(value)
        metadata = dict(response.get("Metadata") or {})
        for name, field in DIGEST_METADATA.items():
            value = metadata.pop(field, None)
            if value:
                checksums[name] = base64.b64decode(value)
        http_metadata = HttpMetadata()
        if http:
            values = {name: response.get(s3_name) for name, s3_name in HTTP_TO_S3.items()}
            if values["content_type"] == S3_DEFAULT_CONTENT_TYPE:
                values["content_type"] = None
            expires = response.get("Expires")
            http_metadata = HttpMetadata(
                **values,
                cache_expiry=int(expires.timestamp() * 1000) if isinstance(expires, dt.datetime) else None,
            )
        return ObjectInfo(
            key=key,
            version=_version(response, etag, uploaded),
            size=int(response.get("ContentLength", response.get("Size", 0))),
            etag=etag,
            uploaded=uploaded,
            http_metadata=http_metadata,
            custom_metadata=metadata if custom else {},
            checksums=checksums,
        )

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            response = await self.s3.head_object(
                Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
            )
        except ClientError as e:
            if code_of(e) in ("404", "NoSuchKey", "NotFound"):
                if not self._bucket_seen:
                    await self.check()
                    self._bucket_seen = True
                return None
            raise self._error(e, "head") from e
        except (TimeoutError, BotoCoreError, OSError) as e:
            raise self._error(e, "head") from e
        self._bucket_seen = True
        return self._info(key, response)

    async def get(self, key: str, range: RangeSpec | None, only_if: Conditional | None) -> ObjectRead | None:
        for _attempt in (1, 2, 3):
            info = await self.head(key)
            if info is None:
                return None
            if not objects.condition_met(only_if, info):
                return ObjectRead(info, 0, info.size, None)
            offset, length = objects.resolve_range(range, info.size)
            if length == 0:
                return ObjectRead(info, offset, 0, _empty())
            try:
                response = await self.s3.get_object(
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    Range=f"bytes={offset}-{offset + length - 1}",
                    # The bytes of the version just described, not of a put that came between.
                    IfMatch=f'"{info.etag}"',
                )
            except ClientError as e:
                if code_of(e) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                    continue
                raise self._error(e, "get") from e
            except (TimeoutError, BotoCoreError, OSError) as e:
                raise self._error(e, "get") from e
            return ObjectRead(info, offset, length, self._body(response["Body"]))
        raise backend_unavailable(f'object "{key}" kept changing while it was being read; try again')

    async def _body(self, stream: Any) -> AsyncGenerator[bytes, None]:
        """The response body in chunks of up to CHUNK_BYTES, read only as fast as they are sent."""
        try:
            buffer = bytearray()
            while True:
                try:
                    data = await stream.read(CHUNK_BYTES - len(buffer))
                except (TimeoutError, BotoCoreError, OSError) as e:
                    raise self._error(e, "get") from e
                except aiohttp.ClientError as e:
                    # The connection broke mid-body (aiohttp: "payload is not completed"): the
                    # caller's body ends in this error, never as a shorter object.
                    raise backend_unavailable(
                        f"the connection to s3 at {endpoint_of(self.connection)} broke while the "
                        f"object's body was being read ({type(e).__name__}); try again"
                    ) from e
                if not data:
                    break
                buffer += data
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
            if buffer:
                yield bytes(buffer)
        finally:
            stream.close()

    async def list(
        self,
        *,
        prefix: str,
        delimiter: str,
        cursor: str,
        start_after: str,
        limit: int,
        include_http_metadata: bool,
        include_custom_metadata: bool,
    ) -> ObjectListing:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix, "MaxKeys": limit}
        if delimiter:
            params["Delimiter"] = delimiter
        if cursor:
            params["ContinuationToken"] = cursor
        elif start_after:
            params["StartAfter"] = self.prefix + start_after
        try:
            response = await self.s3.list_objects_v2(**params)
        except ClientError as e:
            if code_of(e) == "InvalidArgument" and cursor:
                raise invalid_argument(
                    "list cursor is not valid for this list; pass the cursor of the previous list() call, "
                    "or none to start over"
                ) from e
            raise self._error(e, "list") from e
        except (TimeoutError, BotoCoreError, OSError) as e:
            raise self._error(e, "list") from e
        cut = len(self.prefix)
        entries = response.get("Contents") or []
        if include_http_metadata or include_custom_metadata:
            found = await self._heads([entry["Key"][cut:] for entry in entries])
            infos = [
                self._strip(info, include_http_metadata, include_custom_metadata) for info in found if info
            ]
        else:
            infos = [self._info(entry["Key"][cut:], entry, http=False, custom=False) for entry in entries]
        truncated = bool(response.get("IsTruncated"))
        return ObjectListing(
            objects=infos,
            delimited_prefixes=[p["Prefix"][cut:] for p in response.get("CommonPrefixes") or []],
            truncated=truncated,
            cursor=response.get("NextContinuationToken", "") if truncated else "",
        )

    async def _heads(self, keys: list[str]) -> list[ObjectInfo | None]:
        gate = asyncio.Semaphore(LIST_HEADS_IN_FLIGHT)

        async def one(key: str) -> ObjectInfo | None:
            async with gate:
                return await self.head(key)

        return list(await asyncio.gather(*(one(key) for key in keys)))

    @staticmethod
    def _strip(info: ObjectInfo, http: bool, custom: bool) -> ObjectInfo:
        return dataclasses.replace(
            info,
            http_metadata=info.http_metadata if http else HttpMetadata(),
            custom_metadata=info.custom_metadata if custom else {},
        )

    # --- writes --------------------------------------------------------------------------------

    async def _spool(
        self, body: AsyncIterator[BodyChunk], verify: dict[str, bytes], max_bytes: int, part: int | None
    ) -> tuple[Path, Digests]:
        """The body in a temp file with its digests; the file is removed if anything fails."""
        digests = Digests(verify)
        too_large = objects.put_too_large() if part is None else objects.part_too_large(part)
        path = await spool_body(self.spool, body, digests, max_bytes, too_large)
        return path, digests

    async def check_put(self, options: PutOptions) -> None:
        _check_headers(options.custom_metadata)

    async def put(self, key: str, body: AsyncIterator[BodyChunk], options: PutOptions) -> ObjectInfo | None:
        path, digests = await self._spool(body, options.checksums, objects.MAX_PUT_BYTES, None)
        try:
            if options.only_if is not None and not objects.condition_met(
                options.only_if, await self.head(key)
            ):
                return None
            checksums = digests.verify()
            kept_in_metadata = {
                field: _b64(checksums[name]) for name, field in DIGEST_METADATA.items() if name in checksums
            }
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": self.prefix + key,
                "ContentLength": digests.size,
                "ContentMD5": _b64(checksums["md5"]),
                "Metadata": {**options.custom_metadata, **kept_in_metadata},
                **_http_params(options.http_metadata),
            }
            # S3 keeps one extra digest per object; sha256 when both are given.
            if "sha256" in checksums:
                params["ChecksumAlgorithm"] = "SHA256"
                params["ChecksumSHA256"] = _b64(checksums["sha256"])
            elif "sha1" in checksums:
                params["ChecksumAlgorithm"] = "SHA1"
                params["ChecksumSHA1"] = _b64(checksums["sha1"])
            with path.open("rb") as f:
                try:
                    await self.s3.put_object(Body=f, **params)
                except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
                    raise self._error(e, "put") from e
        finally:
            path.unlink(missing_ok=True)
        info = await self.head(key)
        if info is None:
            raise backend_unavailable(
                f's3 at {self.endpoint} accepted the put of "{key}" but does not show it'
            )
        # Digests the store does not keep (only one extra is sent) are still the ones verified.
        return _with_checksums(info, {k: v for k, v in checksums.items() if k != "md5"})

    async def delete(self, keys: list[str]) -> None:
        try:
            response = await self.s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self.prefix + key} for key in keys], "Quiet": True},
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
            raise self._error(e, "delete") from e
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise self._error(
                ClientError(
                    {"Error": {"Code": first.get("Code"), "Message": first.get("Message")}}, "DeleteObjects"
                ),
                "delete",
            )

    # --- multipart -----------------------------------------------------------------------------

    async def create_multipart_upload(
        self, key: str, http_metadata: HttpMetadata, custom_metadata: dict[str, str]
    ) -> str:
        _check_headers(custom_metadata)
        try:
            response = await self.s3.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Metadata=custom_metadata,
                **_http_params(http_metadata),
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
            raise self._error(e, "create a multipart upload") from e
        return str(response["UploadId"])

    def _upload_error(self, e: BaseException, upload_id: str, operation: str) -> BindingdError:
        if isinstance(e, ClientError) and code_of(e) in ("NoSuchUpload", "404"):
            return objects.no_such_upload(upload_id)
        return self._error(e, operation)

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, body: AsyncIterator[BodyChunk]
    ) -> str:
        path, digests = await self._spool(body, {}, objects.MAX_PART_BYTES, part_number)
        try:
            md5 = digests.verify()["md5"]
            with path.open("rb") as f:
                response = await self.s3.upload_part(
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    UploadId=upload_id,
                    PartNumber=part_number,
                    Body=f,
                    ContentLength=digests.size,
                    ContentMD5=_b64(md5),
                )
        except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
            raise self._upload_error(e, upload_id, "upload a part") from e
        finally:
            path.unlink(missing_ok=True)
        return _etag(response["ETag"])

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        stored = await self._parts(key, upload_id)
        ordered = sorted(parts)
        for number, etag in ordered:
            if number not in stored or stored[number][1] != etag.strip('"'):
                raise invalid_argument(
                    f"part {number} with etag {etag} was not uploaded to this multipart upload; "
                    "pass the parts that upload_part() returned"
                )
        objects.check_part_sizes([(number, stored[number][0]) for number, _ in ordered])
        try:
            await self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.prefix + key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": f'"{stored[n][1]}"'} for n, _ in ordered]
                },
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
            if isinstance(e, ClientError) and code_of(e) not in ("NoSuchUpload", "404"):
                # Some stores answer an upload aborted meanwhile with a server error: ask again.
                await self.check_upload(key, upload_id)
            raise self._upload_error(e, upload_id, "complete a multipart upload") from e
        info = await self.head(key)
        if info is None:
            raise backend_unavailable(
                f's3 at {self.endpoint} completed the upload of "{key}" but does not show it'
            )
        return info

    async def check_upload(self, key: str, upload_id: str) -> None:
        """Asked before a part is received, so every store answers a stale id alike (some answer
        a finished upload's id with a server error)."""
        try:
            await self.s3.list_parts(
                Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id, MaxParts=1
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
            raise self._upload_error(e, upload_id, "upload a part") from e

    async def _parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]]:
        """Size and etag of each uploaded part, by number."""
        found: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            try:
                response = await self.s3.list_parts(
                    Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id, PartNumberMarker=marker
                )
            except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
                raise self._upload_error(e, upload_id, "list the parts of a multipart upload") from e
            for part in response.get("Parts") or []:
                found[part["PartNumber"]] = (part["Size"], _etag(part["ETag"]))
            if not response.get("IsTruncated"):
                return found
            marker = response["NextPartNumberMarker"]

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """R2's abort is idempotent: an upload already completed or aborted aborts without error.
        S3 forgets a finished upload, so it cannot tell one from an id it never made: both pass."""
        try:
            await self.s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError) as e:
            if isinstance(e, ClientError) and code_of(e) in ("NoSuchUpload", "404"):
                return
            raise self._error(e, "abort a multipart upload") from e


def _check_headers(custom: dict[str, str]) -> None:
    """S3 carries metadata in HTTP headers: refuse what a header cannot hold as the caller's
    mistake, before any byte is sent (botocore would fail it as a transport error)."""
    for name, value in custom.items():
        if name.lower() in DIGEST_METADATA.values():
            raise invalid_argument(
                f"custom metadata name {name!r} is reserved by the s3 provider (it keeps the object's "
                "sha384/sha512 checksum there); use another name"
            )
        for what, text in (("name", name), ("value", value)):
            if not (text.isascii() and text.isprintable()):
                raise invalid_argument(
                    f"custom metadata {what} {text!r} is not printable ASCII; the s3 provider sends "
                    "custom metadata as HTTP headers, which hold only printable ASCII (encode the "
                    "value, e.g. percent-encoding, before the put)"
                )


def _http_params(http: HttpMetadata) -> dict[str, Any]:
    params: dict[str, Any] = {
        s3_name: getattr(http, name)
        for name, s3_name in HTTP_TO_S3.items()
        if getattr(http, name) is not None
    }
    if http.cache_expiry is not None:
        params["Expires"] = dt.datetime.fromtimestamp(http.cache_expiry / 1000, tz=dt.UTC)
    return params


def _with_checksums(info: ObjectInfo, extra: dict[str, bytes]) -> ObjectInfo:
    return dataclasses.replace(info, checksums={**info.checksums, **extra})


async def _empty() -> AsyncGenerator[bytes, None]:
    """The body of a zero-length range: nothing to ask the store for."""
    for chunk in ():
        yield chunk
