"""The client of an s3 connection entry: one aiobotocore client (and its pool of kept-alive
connections), shared by every binding on it.

Also what every provider on s3 needs: where it points, and the mapping of botocore's errors to
the error table.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from bindingd.config.model import Connection
from bindingd.errors import BindingdError, Reason, backend_timeout, backend_unavailable

DEFAULT_TIMEOUT_S = 30.0
AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}


class S3Client:
    """An open aiobotocore client and the context manager that closes it."""

    def __init__(self, creator: Any, s3: Any) -> None:
        self.creator = creator
        self.s3 = s3


def endpoint_of(connection: Connection) -> str:
    """Where the connection points, for messages (the endpoint option holds no credentials)."""
    return connection.options.get("endpoint") or "the default AWS S3 endpoint"


def timeout_of(connection: Connection) -> float:
    return float(connection.options.get("timeout") or DEFAULT_TIMEOUT_S)


async def open_client(connection: Connection) -> S3Client:
    """The connection's client; opening it does not contact the endpoint."""
    options = connection.options
    timeout = timeout_of(connection)
    config = AioConfig(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=32,
        s3={"addressing_style": "path" if options.get("path_style") else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    creator = get_session().create_client(
        "s3",
        endpoint_url=options.get("endpoint"),
        region_name=options.get("region") or "us-east-1",
        aws_access_key_id=options.get("access_key_id"),
        aws_secret_access_key=options.get("secret_access_key"),
        config=config,
    )
    return S3Client(creator, await creator.__aenter__())


async def close_client(client: S3Client) -> None:
    with contextlib.suppress(Exception):
        await client.creator.__aexit__(None, None, None)


def code_of(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def map_error(e: BaseException, connection: Connection, operation: str) -> BindingdError:
    """An S3 or network failure during `operation` as the error table's reason. Never carries
    credentials."""
    if isinstance(e, BindingdError):
        return e
    endpoint, timeout = endpoint_of(connection), timeout_of(connection)
    if isinstance(e, ClientError):
        code = code_of(e)
        message = e.response.get("Error", {}).get("Message") or code
        if code in AUTH_CODES:
            return BindingdError(
                Reason.AUTH_FAILED,
                f'authentication failed for connection "{connection.name}" at {endpoint}: '
                f"{code} ({message}); check its access_key_id and secret_access_key",
            )
        if code in ("RequestTimeout", "RequestTimeTooSkewed"):
            return backend_timeout(f"s3 at {endpoint} timed out during {operation}: {message}")
        return backend_unavailable(f"s3 at {endpoint} failed the {operation}: {code} ({message})")
    if isinstance(e, ConnectTimeoutError):
        return backend_unavailable(
            f"cannot reach s3 at {endpoint}: no connection within {timeout:.1f}s ({operation})"
        )
    if isinstance(e, ReadTimeoutError | asyncio.TimeoutError):
        return backend_timeout(f"s3 at {endpoint} did not answer within {timeout:.1f}s ({operation})")
    if isinstance(e, EndpointConnectionError):
        return backend_unavailable(f"cannot reach s3 at {endpoint}: connection refused or no route")
    if isinstance(e, NoCredentialsError):
        return BindingdError(
            Reason.AUTH_FAILED,
            f'connection "{connection.name}" has no credentials: set access_key_id and '
            "secret_access_key (by reference)",
        )
    return backend_unavailable(f"cannot reach s3 at {endpoint} ({operation}): {type(e).__name__}: {e}")
