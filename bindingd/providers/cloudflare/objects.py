"""CloudflareObjects: an R2 bucket of the account, through the proxy Worker's binding of the same
name (or `remote_binding:`).

A put or a part is spooled to a temp file under the binding's state folder while its digests are
computed (as the s3 provider does): the request is signed over the body's SHA-256, which must be
known before the first byte is sent, and a checksum mismatch must store nothing. The spooled
file is then streamed to the Worker with its length, which hands it to R2 without buffering (R2
verifies the signed SHA-256 of a put; the Worker hashes a part as it streams). A get streams the
Worker's response through in chunks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bindingd.config.model import Binding
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
from bindingd.errors import BindingdError, Reason, backend_unavailable, invalid_argument
from bindingd.providers.bodies import remove_leftovers, spool_body
from bindingd.providers.cloudflare.client import EMPTY_SHA256
from bindingd.providers.cloudflare.kv import CloudflareBase
from bindingd.providers.connections import ProviderContext
from bindingd.providers.local.sqlite import private_folder

HTTP_TO_R2 = {
    "content_type": "contentType",
    "content_language": "contentLanguage",
    "content_disposition": "contentDisposition",
    "content_encoding": "contentEncoding",
    "cache_control": "cacheControl",
}
# R2 keeps no sha384 or sha512 of an object: a verified one is kept in its custom metadata under
# these names (hidden from custom metadata), so head, get and list answer it (as the s3 provider).
DIGEST_METADATA = {"sha384": "bindingd-sha384", "sha512": "bindingd-sha512"}
# What R2 (and Miniflare's R2) says of an upload id it does not know.
_NO_SUCH_UPLOAD = ("10024", "does not exist", "NoSuchUpload")


def _ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _info(o: dict[str, Any]) -> ObjectInfo:
    http = o.get("httpMetadata") or {}
    expiry = http.get("cacheExpiry")
    checksums = {
        name: bytes.fromhex(value)
        for name, value in (o.get("checksums") or {}).items()
        if isinstance(value, str) and value
    }
    custom = dict(o.get("customMetadata") or {})
    for name, field in DIGEST_METADATA.items():
        value = custom.pop(field, None)
        if value:
            checksums[name] = bytes.fromhex(value)
    return ObjectInfo(
        key=o["key"],
        version=o["version"],
        size=int(o["size"]),
        etag=o["etag"],
        uploaded=_ms(o["uploaded"]),
        http_metadata=HttpMetadata(
            **{name: http.get(r2) for name, r2 in HTTP_TO_R2.items()},
            cache_expiry=_ms(expiry) if isinstance(expiry, str) else None,
        ),
        custom_metadata=custom,
        checksums=checksums,
        storage_class=o.get("storageClass") or "Standard",
    )


def _http_args(http: HttpMetadata) -> dict[str, Any]:
    args: dict[str, Any] = {r2: getattr(http, name) for name, r2 in HTTP_TO_R2.items() if getattr(http, name)}
    if http.cache_expiry is not None:
        args["cacheExpiry"] = dt.datetime.fromtimestamp(http.cache_expiry / 1000, tz=dt.UTC).isoformat()
    return args


class CloudflareObjects(CloudflareBase):
    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        super().__init__(binding, context)
        self.spool = context.state_dir / "objects" / binding.name / "spool"

    async def start(self) -> None:
        private_folder(self.spool)
        remove_leftovers(self.spool)
        await super().start()

    async def check(self) -> str:
        await self.client.call(self.remote, "list", {"limit": 1})
        return f"proxy Worker {self.client.url}, R2 binding {self.remote}"

    async def _json(self, op: str, args: dict[str, Any], body: Any = b"", sha256: str | None = None) -> Any:
        _, data, _ = await self.client.call(self.remote, op, args, body, sha256)
        return json.loads(data)

    # --- reads ---------------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo | None:
        o = (await self._json("head", {"key": key}))["object"]
        return None if o is None else _info(o)

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
            # The bytes of the version just described, not of a put that came between.
            args = {
                "key": key,
                "range": {"offset": offset, "length": length},
                "onlyIf": {"etagMatches": info.etag},
            }
            call = self.client.open(self.remote, "get", args)
            resp = await call.__aenter__()
            try:
                described = resp.headers.get("x-bindingd-object")
            except BaseException:
                await call.__aexit__(None, None, None)
                raise
            if described is None:  # changed or gone meanwhile: described again
                await call.__aexit__(None, None, None)
                continue
            return ObjectRead(info, offset, length, self._body(call, resp))
        raise backend_unavailable(f'object "{key}" kept changing while it was being read; try again')

    async def _body(self, call: Any, resp: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
        try:
            buffer = bytearray()
            while True:
                try:
                    data = await resp.content.read(CHUNK_BYTES - len(buffer))
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    raise backend_unavailable(
                        f"the connection to the proxy Worker at {self.client.url} broke while the "
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
            await call.__aexit__(None, None, None)

    # --- writes --------------------------------------------------------------------------------

    async def _spool(
        self, body: AsyncIterator[BodyChunk], verify: dict[str, bytes], max_bytes: int, part: int | None
    ) -> tuple[Path, Digests]:
        """The body in a temp file with its digests (always its SHA-256, which the request
        signs); the file is removed if anything fails."""
        digests = Digests(verify)
        digests.hashes.setdefault("sha256", hashlib.sha256())
        too_large = objects.put_too_large() if part is None else objects.part_too_large(part)
        path = await spool_body(self.spool, body, digests, max_bytes, too_large)
        return path, digests

    async def check_put(self, options: PutOptions) -> None:
        _check_reserved(options.custom_metadata)

    async def put(self, key: str, body: AsyncIterator[BodyChunk], options: PutOptions) -> ObjectInfo | None:
        path, digests = await self._spool(body, options.checksums, objects.MAX_PUT_BYTES, None)
        try:
            checksums = digests.verify()
            # The condition is decided here, by the contract's rules (HTTP etag lists, quoted,
            # weak or `*`; a strong if-match): R2's onlyIf takes one bare etag and compares
            # weakly. What R2 is given is the state that was checked, so that it still refuses a
            # put that raced a change: the same object (its etag), or still no object.
            guard: dict[str, str] | None = None
            if options.only_if is not None:
                checked = await self.head(key)
                if not objects.condition_met(options.only_if, checked):
                    return None
                guard = {"etagDoesNotMatch": "*"} if checked is None else {"etagMatches": checked.etag}
            kept_in_metadata = {
                field: checksums[name].hex() for name, field in DIGEST_METADATA.items() if name in checksums
            }
            args: dict[str, Any] = {
                "key": key,
                "httpMetadata": _http_args(options.http_metadata),
                "customMetadata": {**options.custom_metadata, **kept_in_metadata},
            }
            if guard is not None:
                args["onlyIf"] = guard
            r = await self._send("put", args, path, checksums["sha256"].hex())
        finally:
            path.unlink(missing_ok=True)
        if r.get("preconditionFailed"):
            return None
        info = _info(r["object"])
        # R2 keeps md5 and one sha digest; the other verified ones are still the ones given.
        kept = {k: v for k, v in checksums.items() if k in options.checksums or k in ("md5", "sha256")}
        return dataclasses.replace(info, checksums={**kept, **info.checksums})

    async def _send(self, op: str, args: dict[str, Any], path: Path, sha256: str) -> Any:
        """A call whose body is the spooled file, streamed with its length."""
        if path.stat().st_size == 0:
            return await self._json(op, args, b"", EMPTY_SHA256)
        with path.open("rb") as f:
            return await self._json(op, args, f, sha256)

    async def delete(self, keys: list[str]) -> None:
        await self._json("delete", {"keys": keys})

    # --- multipart -----------------------------------------------------------------------------

    async def create_multipart_upload(
        self, key: str, http_metadata: HttpMetadata, custom_metadata: dict[str, str]
    ) -> str:
        _check_reserved(custom_metadata)
        r = await self._json(
            "mpCreate",
            {"key": key, "httpMetadata": _http_args(http_metadata), "customMetadata": custom_metadata},
        )
        return str(r["uploadId"])

    def _upload_error(self, e: BindingdError, upload_id: str) -> BindingdError:
        if e.reason == Reason.AUTH_FAILED:
            return e
        if any(s in e.message for s in _NO_SUCH_UPLOAD):
            return objects.no_such_upload(upload_id)
        if "(10011)" in e.message:  # R2: a part but the last is smaller than 5 MiB
            return invalid_argument(
                f"{e.message}; every part but the last must be at least "
                f"{objects.MIN_PART_BYTES // (1024 * 1024)} MiB ({objects.MIN_PART_BYTES} bytes)"
            )
        if "(10048)" in e.message:  # R2: the parts are not of one size
            return invalid_argument(
                f"{e.message}; every part but the last must be the same size, and the last no "
                "larger than the others"
            )
        return e

    async def check_upload(self, key: str, upload_id: str) -> None:
        """Asked before a part's body is accepted: an upload completed or aborted is refused at
        once (the Worker's `mpCheck`). An id R2 cannot place (Miniflare: one it never made) is
        left to the part upload, which refuses it."""
        try:
            await self._json("mpCheck", {"key": key, "uploadId": upload_id})
        except BindingdError as e:
            raise self._upload_error(e, upload_id) from e

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, body: AsyncIterator[BodyChunk]
    ) -> str:
        path, digests = await self._spool(body, {}, objects.MAX_PART_BYTES, part_number)
        try:
            sha256 = digests.verify()["sha256"].hex()
            args = {"key": key, "uploadId": upload_id, "partNumber": part_number}
            r = await self._send("mpPart", args, path, sha256)
        except BindingdError as e:
            raise self._upload_error(e, upload_id) from e
        finally:
            path.unlink(missing_ok=True)
        return str(r["etag"])

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        args = {
            "key": key,
            "uploadId": upload_id,
            "parts": [{"partNumber": n, "etag": etag.strip('"')} for n, etag in sorted(parts)],
        }
        try:
            r = await self._json("mpComplete", args)
        except BindingdError as e:
            raise self._upload_error(e, upload_id) from e
        return _info(r["object"])

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """R2's abort is idempotent: an upload already completed or aborted aborts without error."""
        try:
            await self._json("mpAbort", {"key": key, "uploadId": upload_id})
        except BindingdError as e:
            # Miniflare's R2 answers an upload already completed with an internal error.
            if self._upload_error(e, upload_id) is not e or "(10001)" in e.message:
                return
            raise

    # Last: below it, `list[...]` in an annotation would name this method.
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
        # The sha384 / sha512 digests R2 does not keep are in custom metadata (DIGEST_METADATA):
        # a listing answers them only with include customMetadata. Asking for it always would
        # cost pages: R2 answers fewer objects a page with metadata (1000 keys: 11 pages of
        # 300, not 4).
        include = [
            name
            for name, wanted in (
                ("httpMetadata", include_http_metadata),
                ("customMetadata", include_custom_metadata),
            )
            if wanted
        ]
        args: dict[str, Any] = {"prefix": prefix, "limit": limit, "include": include}
        if delimiter:
            args["delimiter"] = delimiter
        if cursor:
            args["cursor"] = cursor
        elif start_after:
            args["startAfter"] = start_after
        r = await self._json("list", args)
        infos = []
        for o in r["objects"]:
            info = _info(o)
            infos.append(
                dataclasses.replace(
                    info,
                    http_metadata=info.http_metadata if include_http_metadata else HttpMetadata(),
                    custom_metadata=info.custom_metadata if include_custom_metadata else {},
                )
            )
        return ObjectListing(
            objects=infos,
            delimited_prefixes=list(r.get("delimitedPrefixes") or []),
            truncated=bool(r["truncated"]),
            cursor=r.get("cursor") or "",
        )


def _check_reserved(custom: dict[str, str]) -> None:
    for name in custom:
        if name.lower() in DIGEST_METADATA.values():
            raise invalid_argument(
                f"custom metadata name {name!r} is reserved by the cloudflare provider (it keeps the "
                "object's sha384/sha512 checksum there); use another name"
            )


async def _empty() -> AsyncGenerator[bytes, None]:
    """The body of a zero-length range: nothing to ask the Worker for."""
    empty: tuple[bytes, ...] = ()
    for chunk in empty:
        yield chunk
