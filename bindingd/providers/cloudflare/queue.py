"""CloudflareQueue: send to a Cloudflare Queue through the proxy Worker's producer binding.

Consuming needs Cloudflare's HTTP pull API, which nothing here can test against, so receive and
settle refuse with a message that says so (issue 15).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from bindingd.domain.queue import OutgoingMessage, QueueDelivery, QueueSettled, Retry
from bindingd.errors import invalid_argument
from bindingd.providers.cloudflare.kv import CloudflareBase

CONSUME_UNSUPPORTED = (
    "consuming a Cloudflare queue is not supported from a laptop: the proxy Worker only has the "
    "queue's producer binding (send, send_batch); consume it in a deployed Worker, or serve this "
    "binding locally for development"
)


def _message(m: OutgoingMessage) -> dict[str, Any]:
    # JSON and text travel as themselves so the queue's consumer sees the same contentType.
    if m.content_type == "json":
        body: Any = json.loads(m.body)
    elif m.content_type == "text":
        body = m.body.decode()
    else:
        return {"body": base64.b64encode(m.body).decode(), "contentType": "bytes", "delaySeconds": m.delay_s}
    return {"body": body, "contentType": m.content_type, "delaySeconds": m.delay_s}


class CloudflareQueue(CloudflareBase):
    async def check(self) -> str:
        # A send would enqueue something (and an empty batch is refused by a real producer):
        # the probe only makes sure the Worker answers signed calls and has the binding.
        await self.client.call(self.remote, "probe", {})
        return f"proxy Worker {self.client.url}, queue producer {self.remote}"

    async def send(self, messages: list[OutgoingMessage]) -> None:
        if len(messages) == 1:
            await self.client.call(self.remote, "send", _message(messages[0]))
        else:
            await self.client.call(self.remote, "sendBatch", {"messages": [_message(m) for m in messages]})

    async def receive(self, max_messages: int, visibility_s: float, wait_s: float) -> list[QueueDelivery]:
        raise invalid_argument(CONSUME_UNSUPPORTED)

    async def settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        raise invalid_argument(CONSUME_UNSUPPORTED)
