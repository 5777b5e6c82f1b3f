"""QueueService: gRPC ↔ the queue rules and provider of the named binding.

Sending, consuming and acking all count as writes: a consumer's ack removes messages, so a
read-only binding or a protected env refuses all three (PERMISSION_DENIED).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from bindingd_client.proto import queue_pb2, queue_pb2_grpc

from bindingd.domain import queue
from bindingd.domain.queue import OutgoingMessage, QueueDelivery, Retry
from bindingd.runtime import Runtime
from bindingd.server.audit import audit_write
from bindingd.server.calls import RequestStream, opt, rpc, rpc_stream

# The longest a consumer waits on its provider in one go, so a drain is noticed this quickly.
POLL_S = 0.5


def _message(d: QueueDelivery) -> queue_pb2.QueueMessage:
    return queue_pb2.QueueMessage(
        id=d.id,
        timestamp_ms=d.timestamp_ms,
        body=d.body,
        content_type=d.content_type,
        attempts=d.attempts,
        lease_id=d.lease_id,
    )


class QueueService(queue_pb2_grpc.QueueServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _count(self, binding: str, event: str, n: int) -> None:
        """Queue figures for `bindingd serve --metrics` (the binding was found: it is defined)."""
        metrics = getattr(self.runtime, "metrics", None)  # the gateway's Router has none
        if metrics is not None:
            metrics.queue_event(binding, event, n)

    def _outgoing(self, body: bytes, content_type: str, delay_s: int) -> OutgoingMessage:
        return OutgoingMessage(queue.new_id(), int(self.runtime.clock() * 1000), body, content_type, delay_s)

    @rpc
    async def Send(
        self, request: queue_pb2.QueueSendRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.QueueSendResponse:
        m = request.message
        asked: int | None = opt(m, "delay_seconds")
        queue.check_message(m.body, m.content_type, asked)
        with self.runtime.use(request.binding, "queue", write=True) as served:
            provider = served.provider
            delay = (
                asked if asked is not None else queue.binding_delay(served.binding.options, "delivery_delay")
            )
            message = self._outgoing(m.body, m.content_type, delay)
            await provider.send([message])
            audit_write(served.binding, "send", message.id, context)
        self._count(request.binding, "sent", 1)
        return queue_pb2.QueueSendResponse()

    @rpc
    async def SendBatch(
        self, request: queue_pb2.QueueSendBatchRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.QueueSendBatchResponse:
        delays = queue.check_batch(
            [(m.body, m.content_type, opt(m, "delay_seconds")) for m in request.messages],
            opt(request, "delay_seconds"),
        )
        with self.runtime.use(request.binding, "queue", write=True) as served:
            provider = served.provider
            fallback = queue.binding_delay(served.binding.options, "delivery_delay")
            messages = [
                self._outgoing(m.body, m.content_type, fallback if delay is None else delay)
                for m, delay in zip(request.messages, delays, strict=True)
            ]
            await provider.send(messages)
            audit_write(served.binding, "send_batch", f"{len(messages)} messages", context)
        self._count(request.binding, "sent", len(messages))
        return queue_pb2.QueueSendBatchResponse()

    @rpc_stream
    async def Consume(
        self, requests: RequestStream, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[queue_pb2.QueueBatch]:
        first: queue_pb2.QueueConsumeRequest | None = await self._next_request(requests)
        if first is None:
            return
        size, max_wait, visibility = queue.check_consume(
            opt(first, "batch_size"),
            opt(first, "max_wait_seconds"),
            opt(first, "visibility_timeout_seconds"),
        )
        runtime, binding = self.runtime, first.binding
        runtime.use(binding, "queue", write=True)  # refused at once, not at the first batch
        while not runtime.draining:
            batch = await self._one_batch(binding, size, max_wait, visibility)
            if batch:
                self._count(binding, "delivered", len(batch))
                yield queue_pb2.QueueBatch(messages=[_message(d) for d in batch])
                if await self._next_request(requests) is None:
                    return

    async def _one_batch(
        self, binding: str, size: int, max_wait: float, visibility: float
    ) -> list[QueueDelivery]:
        """Messages once `size` came or `max_wait` passed since the first; [] on a drain.

        Each wait on the provider is at most POLL_S, so a drain is noticed that quickly; each
        asks for the binding again, so a reload that removes it ends the stream.
        """
        runtime = self.runtime
        batch: list[QueueDelivery] = []
        fill_deadline = 0.0
        while not runtime.draining or batch:
            wait = POLL_S if not batch else max(0.0, min(POLL_S, fill_deadline - time.monotonic()))
            if runtime.draining:
                wait = 0.0
            with runtime.use(binding, "queue", write=True) as served:
                provider = served.provider
                got = await provider.receive(size - len(batch), visibility, wait)
            if got and not batch:
                fill_deadline = time.monotonic() + max_wait
            batch += got
            if batch and (len(batch) >= size or time.monotonic() >= fill_deadline or runtime.draining):
                return batch
        return batch

    async def _next_request(self, requests: RequestStream) -> queue_pb2.QueueConsumeRequest | None:
        """The consumer's next request (it asks for a batch); None when it closed or on a drain."""
        ask: asyncio.Future[queue_pb2.QueueConsumeRequest | None]
        ask = asyncio.ensure_future(anext(requests, None))
        try:
            while not ask.done():
                if self.runtime.draining:
                    return None
                await asyncio.wait([ask], timeout=POLL_S)
            return ask.result()
        finally:
            ask.cancel()

    @rpc
    async def Metrics(
        self, request: queue_pb2.QueueMetricsRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.QueueMetricsResponse:
        """Workers' Queue.metrics(): reads only, so served where sends are refused too."""
        with self.runtime.use(request.binding, "queue") as served:
            backlog = await served.provider.backlog()
        response = queue_pb2.QueueMetricsResponse(backlog_count=backlog.count, backlog_bytes=backlog.bytes)
        if backlog.oldest_ms is not None:
            response.oldest_message_timestamp_ms = backlog.oldest_ms
        return response

    @rpc
    async def Ack(
        self, request: queue_pb2.QueueAckRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.QueueAckResponse:
        asked: list[int | None] = [opt(r, "delay_seconds") for r in request.retries]
        for delay in asked:
            queue.check_delay(delay, "retry delay_seconds")
        with self.runtime.use(request.binding, "queue", write=True) as served:
            provider = served.provider
            fallback = queue.binding_delay(served.binding.options, "retry_delay") if None in asked else 0
            retries = [
                Retry(r.lease_id, fallback if delay is None else delay)
                for r, delay in zip(request.retries, asked, strict=True)
            ]
            settled = await provider.settle(list(request.acks), retries)
        self._count(request.binding, "acked", settled.acked)
        self._count(request.binding, "retried", settled.retried)
        return queue_pb2.QueueAckResponse(
            acked=settled.acked, retried=settled.retried, expired=settled.expired
        )
