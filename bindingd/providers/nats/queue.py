"""Cloudflare Queues on NATS JetStream (nats-py): one stream per binding, durable pull consumers.

Layout of a binding's stream (work-queue retention, file storage):
- `<subject>`: deliverable messages, read by the durable pull consumer `bindingd`
  (explicit ack, `ack_wait` from the binding, unlimited deliveries: bindingd applies
  max_retries itself, so that a message can go to a dead-letter queue, which NATS does not do);
- `<subject>.delayed`: messages sent with a delay. JetStream 2.9 cannot hold a message back,
  so a second durable consumer `bindingd-delayed` naks each one until it is due, then
  republishes it to `<subject>` (deduplicated by Nats-Msg-Id) and acks it.

Leases: a delivered message is leased for the consumer's visibility timeout, which may be
shorter or longer than the consumer's ack_wait. The daemon keeps the leases: it naks a message
whose lease ran out (or dead-letters it after its last retry) and sends in-progress acks to
hold a longer lease. If the daemon dies, JetStream redelivers after ack_wait. Acks are
synchronous (AckAck), so a message reported acked is never delivered again.

Attempts: counted by the daemon. nats-server before 2.10.14 (this machine runs 2.9.10) loses a
redelivery when the only pull requests waiting on the consumer are invalid (expired but not yet
swept, or from a consumer that went away): it takes the message off its redelivery queue,
counts the delivery, and then rewinds its stream cursor instead of putting the message back
(nats-server #5305). The next pull then hands out the message at the cursor as a first delivery
(`num_delivered` 1), or, when several messages are in flight, another message that is still
leased. So the daemon remembers each message it naked (stream sequence, message id, its own
count of attempts, the delivery's ack subject) and counts on from its own
figure (`attempts_of`); it never hands out a message it holds a live lease on (such a duplicate
only refreshes the lease's handle); and a duplicate, the sign of a lost redelivery, makes it nak
again, through their old deliveries, the messages naked before it that have not come back
(`_nak_lost_redeliveries`), instead of leaving them for ack_wait. Without that, a retried
message waited 30 s, or was dead-lettered after two of its three deliveries (CI saw both).
A message this daemon naked comes back as its next attempt, whatever JetStream counted in
between: lost deliveries are not always followed by a duplicate that shows them (CI saw a
message dead-lettered on its second delivery, JetStream's count up by 3 since the nak).
Left as is: JetStream's count cannot tell a lost delivery from a delivery to another daemon
sharing the consumer, so that one is not counted either: with several daemons on one consumer a
message may be delivered more than max_retries + 1 times in all; and such a daemon may see one
of its leased messages once more after a nak again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from bindingd.config.model import Binding, Connection
from bindingd.config.urls import connection_address
from bindingd.domain.queue import (
    OutgoingMessage,
    QueueBacklog,
    QueueDelivery,
    QueueSettled,
    Retry,
    dead_letter_queue_of,
    exhausted,
    max_retries_of,
)
from bindingd.errors import backend_unavailable, describe, invalid_argument
from bindingd.providers.connections import ProviderContext
from bindingd.providers.leases import Lease, Leases, log_dead_letter
from bindingd.providers.nats.client import FAILURES, REQUEST_TIMEOUT_S, NatsClient, map_error

log = structlog.get_logger("bindingd.queue.nats")

CONSUMER = "bindingd"
DELAYED_CONSUMER = "bindingd-delayed"
DEFAULT_ACK_WAIT_S = 30.0
# Attempts remembered for messages the daemon naked; beyond this the oldest are forgotten (only
# a message acked by another daemon sharing the consumer is never removed otherwise), and a
# forgotten one falls back to JetStream's count.
REMEMBERED_ATTEMPTS = 100_000
H_ID, H_TIME, H_TYPE, H_DUE = "Bindingd-Id", "Bindingd-Timestamp", "Bindingd-Content-Type", "Bindingd-Due"
# Characters JetStream refuses in a stream name (as nats.go's validateStreamName).
STREAM_NAME_FORBIDDEN = ">*. /\\\t\r\n"


def attempts_of(num_delivered: int, naked_after: int | None) -> int:
    """The attempt a delivery is, from JetStream's count and, if this daemon naked the message,
    the attempts it had counted then.

    Counted on from the daemon's own attempts: the next one. JetStream's count is not used for
    a message the daemon naked: it also counts a duplicate delivery of a message the daemon held
    a live lease on, which the daemon never handed out, and deliveries nats-server lost
    (#5305), after which it may also restart at 1 (seen here: messages dead-lettered after only
    two of their three deliveries reached a consumer).
    """
    if naked_after is None:
        return num_delivered
    return naked_after + 1


def default_subject(stream: str) -> str:
    return f"bindingd.queue.{stream}"


def _stream_name(name: str, option: str) -> str:
    """A JetStream stream name, checked at start: NATS refuses these characters in one."""
    if not name or any(c in STREAM_NAME_FORBIDDEN for c in name):
        raise invalid_argument(
            f"{option} {name!r} is not a valid NATS stream name; use letters, digits, '-' and '_' "
            "(no '.', '*', '>', '/', '\\' or whitespace)"
        )
    return name


@dataclass
class _Naked:
    """A message this daemon naked, until it is delivered again."""

    message_id: str
    attempts: int  # as the daemon counted them
    reply: str  # the ack subject of that delivery: a nak through it still works
    due: float  # time.monotonic() when JetStream was to deliver it again
    renaked: float = 0.0  # the rewind it was last naked again after (see _nak_lost_redeliveries)


@dataclass
class _Lease(Lease):
    msg: Msg
    seq: int  # the stream sequence: the same for every delivery of the message
    message_id: str
    # When JetStream's own ack_wait timer was last reset (delivery or in-progress ack).
    touched: float


class NatsQueue:
    """The nats queue provider; one per binding, one stream per binding."""

    def __init__(
        self,
        connection: Connection,
        connections: Any,
        stream: str,
        subject: str,
        max_retries: int,
        dead_letter_queue: str | None,
        ack_wait: float,
    ) -> None:
        # Messages that left after their last retry: bindingd_queue_messages_total{event="dead_lettered"}.
        self.dead_lettered = 0
        self.connection = connection
        # For messages: never the credentials the URL may hold.
        self.address = connection_address(connection)
        self._connections = connections
        self.stream = stream
        self.subject = subject
        self.max_retries = max_retries
        self.dead_letter_queue = dead_letter_queue
        self.ack_wait = ack_wait
        self._client: NatsClient | None = None
        self._ready = False
        self._setup_lock = asyncio.Lock()
        self._fetch_lock = asyncio.Lock()
        self._psub: Any = None
        self._leases: Leases[_Lease] = Leases(self._unlink)
        # The live lease of each stream sequence, and the attempts of messages naked since.
        self._leased_seq: dict[int, str] = {}
        self._naked: OrderedDict[int, _Naked] = OrderedDict()
        # When JetStream last handed out a message this daemon held a live lease on.
        self._rewound_at = 0.0
        self._dead_letter_subject: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> NatsQueue:
        assert binding.connection is not None
        options = binding.options
        stream = _stream_name(options.get("stream", binding.name), "stream")
        dead_letter_queue = dead_letter_queue_of(options, stream)
        if dead_letter_queue is not None:
            _stream_name(dead_letter_queue, "dead_letter_queue")
        ack_wait = float(options.get("ack_wait", DEFAULT_ACK_WAIT_S))
        if not ack_wait > 0:
            raise invalid_argument(f"ack_wait is {ack_wait} s; it must be more than 0 (the default is 30)")
        return cls(
            binding.connection,
            context.connections,
            stream,
            options.get("subject", default_subject(stream)),
            max_retries_of(options),
            dead_letter_queue,
            ack_wait,
        )

    async def start(self) -> None:
        self._client = await self._connections.acquire(self.connection, NatsClient)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Unsettled leases: JetStream redelivers them after ack_wait; nak them now to be quicker.
        for lease in self._leases:
            with contextlib.suppress(Exception):
                await lease.msg.nak()
        self._leases.clear()
        self._leased_seq.clear()
        if self._client is not None:
            await self._connections.release(self.connection)

    async def check(self) -> str:
        js = await self._js()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return f"nats at {self.address}, stream {self.stream} not created yet"
        except FAILURES as e:
            raise map_error(e, self.connection) from None
        return f"nats at {self.address}, stream {self.stream} ({info.state.messages} messages)"

    async def backlog(self) -> QueueBacklog:
        """The stream's messages (work-queue retention: an ack removes one), their stored bytes
        (headers included), and the first one's send time."""
        js = await self._js()
        self._require_connected()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return QueueBacklog(0, 0, None)
        except FAILURES as e:
            raise map_error(e, self.connection) from None
        state = info.state
        oldest: int | None = None
        if state.messages:
            try:
                first = await js.get_msg(self.stream, state.first_seq)
                stamp = (first.headers or {}).get(H_TIME)
                oldest = int(stamp) if stamp and stamp.isdigit() else None
            except nats.js.errors.NotFoundError:
                pass  # acked meanwhile
            except FAILURES as e:
                raise map_error(e, self.connection) from None
        return QueueBacklog(int(state.messages), int(state.bytes), oldest)

    def _require_connected(self) -> None:
        """Fail at once while the connection is down: a send is then not held back to be
        stored later after all, and a consumer hears of the outage instead of seeing an empty
        queue."""
        assert self._client is not None, "provider not started"
        if not self._client.connected:
            raise backend_unavailable(
                f"the connection to nats at {self.address} is down; bindingd is reconnecting, retry shortly"
            )

    async def _js(self) -> JetStreamContext:
        assert self._client is not None, "provider not started"
        return await self._client.jetstream()

    async def _setup(self) -> JetStreamContext:
        """The stream and its consumers, created on first use (and checked once)."""
        js = await self._js()
        if self._ready:
            return js
        async with self._setup_lock:
            if self._ready:
                return js
            try:
                await _ensure_stream(js, self.stream, [self.subject, self.subject + ".delayed"])
                for durable, subject in (
                    (CONSUMER, self.subject),
                    (DELAYED_CONSUMER, self.subject + ".delayed"),
                ):
                    try:
                        await js.consumer_info(self.stream, durable)
                    except nats.js.errors.NotFoundError:
                        await js.add_consumer(
                            self.stream,
                            api.ConsumerConfig(
                                durable_name=durable,
                                filter_subject=subject,
                                ack_policy=api.AckPolicy.EXPLICIT,
                                ack_wait=self.ack_wait,
                                max_deliver=-1,
                                deliver_policy=api.DeliverPolicy.ALL,
                                max_ack_pending=-1,
                            ),
                        )
            except nats.js.errors.BadRequestError as e:
                raise backend_unavailable(
                    f"nats stream {self.stream} (subject {self.subject}) cannot be used: {e.description}; "
                    "give the binding a `stream` and `subject` of its own"
                ) from None
            except FAILURES as e:
                raise map_error(e, self.connection) from None
            self._ready = True
            return js

    def _headers(self, m: OutgoingMessage) -> dict[str, str]:
        return {H_ID: m.id, H_TIME: str(m.timestamp_ms), H_TYPE: m.content_type, "Nats-Msg-Id": m.id}

    async def send(self, messages: list[OutgoingMessage]) -> None:
        js = await self._setup()
        self._require_connected()
        now = time.time()

        async def publish(m: OutgoingMessage) -> None:
            headers = self._headers(m)
            subject = self.subject
            if m.delay_s:
                headers[H_DUE] = f"{now + m.delay_s:.3f}"
                subject += ".delayed"
            await js.publish(subject, m.body, stream=self.stream, headers=headers)

        # Published together; a retry of the same ids inside the 2-minute duplicate window is
        # stored once, so a send that failed half way can be retried by the caller's next try
        # only with new ids. JetStream 2.9 has no atomic multi-message publish.
        results = await asyncio.gather(*(publish(m) for m in messages), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            stored = len(messages) - len(failures)
            error = map_error(failures[0], self.connection)
            if stored and len(messages) > 1:
                error.message += f" ({stored} of the {len(messages)} messages were stored)"
            raise error
        if any(m.delay_s for m in messages):
            self._start_background()

    async def receive(self, max_messages: int, visibility_s: float, wait_s: float) -> list[QueueDelivery]:
        js = await self._setup()
        self._start_background()
        self._require_connected()
        async with self._fetch_lock:
            try:
                if self._psub is None:
                    self._psub = await js.pull_subscribe_bind(CONSUMER, self.stream)
                msgs = await self._psub.fetch(max_messages, timeout=max(wait_s, 0.05))
            except (TimeoutError, nats.errors.TimeoutError):
                self._require_connected()  # no message came because the connection dropped
                return []
            except FAILURES as e:
                self._psub = None  # bound again on the next call, to a new connection if need be
                raise map_error(e, self.connection) from None
        now = time.monotonic()
        out: list[QueueDelivery] = []
        for msg in msgs:
            headers = msg.headers or {}
            message_id = headers.get(H_ID, "")
            seq = msg.metadata.sequence.stream
            held = self._leases.get(self._leased_seq.get(seq, ""))
            if held is not None:
                # JetStream handed out a message this daemon holds a live lease on (a lost
                # redelivery rewound its cursor, or a keep-alive came late): the lease stays
                # with its holder; JetStream now tracks this delivery, so settle through it.
                log.debug("message delivered again while leased", stream=self.stream, id=message_id)
                held.msg, held.touched = msg, now
                self._rewound_at = now
                continue
            naked = self._naked.pop(seq, None)
            counted = naked.attempts if naked is not None and naked.message_id == message_id else None
            attempts = attempts_of(msg.metadata.num_delivered, counted)
            if exhausted(attempts - 1, self.max_retries):
                # Its last lease ran out while no daemon was watching it.
                await self._dead_letter(msg, attempts - 1)
                continue
            lease = _Lease(
                attempts=attempts,
                deadline=now + visibility_s,
                msg=msg,
                seq=seq,
                message_id=message_id,
                touched=now,
            )
            lease_id = self._leases.grant(lease)
            self._leased_seq[seq] = lease_id
            out.append(
                QueueDelivery(
                    id=message_id,
                    timestamp_ms=int(headers.get(H_TIME, "0")),
                    body=msg.data,
                    content_type=headers.get(H_TYPE, "bytes"),
                    attempts=attempts,
                    lease_id=lease_id,
                )
            )
        if self._rewound_at == now:
            await self._nak_lost_redeliveries()
        return out

    async def settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        await self._setup()
        self._require_connected()  # before the leases are taken: they stay to be settled later
        expired: list[str] = []
        taken: list[tuple[_Lease, Retry | None]] = []
        for lease_id in acks:
            lease = self._leases.take(lease_id)
            if lease is None:
                expired.append(lease_id)
            else:
                taken.append((lease, None))
        for retry in retries:
            lease = self._leases.take(retry.lease_id)
            if lease is None:
                expired.append(retry.lease_id)
            else:
                taken.append((lease, retry))

        async def apply(lease: _Lease, retry: Retry | None) -> None:
            if retry is None:
                await lease.msg.ack_sync(timeout=REQUEST_TIMEOUT_S)
            else:
                await self._hand_back(lease, retry.delay_s)

        results = await asyncio.gather(
            *(apply(lease, retry) for lease, retry in taken), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # Not settled: JetStream delivers those messages again after ack_wait.
            raise map_error(failures[0], self.connection)
        return QueueSettled(
            acked=sum(1 for _, r in taken if r is None),
            retried=sum(1 for _, r in taken if r is not None),
            expired=expired,
        )

    def _unlink(self, lease_id: str, lease: _Lease) -> None:
        """A lease taken: its message's sequence is no longer leased (unless leased again since)."""
        if self._leased_seq.get(lease.seq) == lease_id:
            del self._leased_seq[lease.seq]

    def _remember_nak(self, lease: _Lease, delay_s: int) -> None:
        """Before a nak: the next delivery of the message is attempt lease.attempts + 1, even
        if JetStream counts it as a first delivery (see the module's docstring)."""
        self._naked[lease.seq] = _Naked(
            lease.message_id,
            lease.attempts,
            lease.msg.reply,
            time.monotonic() + delay_s,
        )
        self._naked.move_to_end(lease.seq)
        while len(self._naked) > REMEMBERED_ATTEMPTS:
            self._naked.popitem(last=False)

    async def _dead_letter(self, msg: Msg, attempts: int) -> None:
        headers = msg.headers or {}
        message_id = headers.get(H_ID, "")
        if self.dead_letter_queue:
            js = await self._js()
            if self._dead_letter_subject is None:
                subject = default_subject(self.dead_letter_queue)
                self._dead_letter_subject = await _ensure_stream(
                    js, self.dead_letter_queue, [subject, subject + ".delayed"]
                )
            forwarded = {k: v for k, v in headers.items() if k.startswith("Bindingd-") and k != H_DUE}
            forwarded["Nats-Msg-Id"] = f"{message_id}:dead"
            await js.publish(
                self._dead_letter_subject, msg.data, stream=self.dead_letter_queue, headers=forwarded
            )
        log_dead_letter(log, self.dead_letter_queue, message_id, attempts, stream=self.stream)
        self.dead_lettered += 1
        await msg.ack_sync(timeout=REQUEST_TIMEOUT_S)

    def _start_background(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._keep_leases()), loop.create_task(self._release_due())]

    async def _keep_leases(self) -> None:
        """Nak (or dead-letter) leases that ran out; keep longer leases alive in JetStream. A
        failure is only logged: JetStream redelivers the message after ack_wait anyway."""
        await self._leases.upkeep(self._hand_back, self._keep_alive, log, stream=self.stream)

    async def _hand_back(self, lease: _Lease, delay_s: int = 0) -> None:
        """A taken lease not acked: the message is delivered again (after `delay_s`), or
        dead-lettered after its last retry."""
        if exhausted(lease.attempts, self.max_retries):
            await self._dead_letter(lease.msg, lease.attempts)
        else:
            self._remember_nak(lease, delay_s)
            await lease.msg.nak(delay=delay_s or None)

    async def _nak_lost_redeliveries(self) -> None:
        """Nak again the messages whose redelivery nats-server lost (#5305). The sign is a
        rewound cursor: JetStream just handed out a message this daemon still leased. Each
        message naked and due before that which has not come back is then naked again through
        its old delivery (JetStream takes that nak while the message is pending, and a message
        already queued for redelivery is queued once). Another daemon sharing the consumer may
        hold one of them: it then sees it once more, as after any lease that ran out."""
        if self._client is None:
            return
        rewound = self._rewound_at
        for naked in list(self._naked.values()):
            # Past ack_wait, JetStream redelivers a lost one by itself.
            if naked.renaked < rewound and rewound - self.ack_wait < naked.due <= rewound:
                naked.renaked = rewound
                log.debug("redelivery lost; naked again", stream=self.stream, id=naked.message_id)
                with contextlib.suppress(*FAILURES):
                    await self._client.nak_by_reply(naked.reply)

    async def _keep_alive(self, lease: _Lease, now: float) -> None:
        """Reset JetStream's ack_wait timer before it runs out on a longer lease."""
        if now - lease.touched >= self.ack_wait / 2:
            await lease.msg.in_progress()
            lease.touched = now

    async def _release_due(self) -> None:
        """Move delayed messages that are due to the deliverable subject."""
        psub = None
        while True:
            try:
                js = await self._setup()
                if psub is None:
                    psub = await js.pull_subscribe_bind(DELAYED_CONSUMER, self.stream)
                try:
                    msgs = await psub.fetch(100, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for msg in msgs:
                    headers = dict(msg.headers or {})
                    due = float(headers.pop(H_DUE, "0"))
                    wait = due - time.time()
                    if wait > 0:
                        await msg.nak(delay=wait)
                        continue
                    headers["Nats-Msg-Id"] = f"{headers.get(H_ID, '')}:due"
                    await js.publish(self.subject, msg.data, stream=self.stream, headers=headers)
                    await msg.ack_sync(timeout=REQUEST_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                psub = None
                log.debug("delayed-message mover waiting for nats", stream=self.stream, error=describe(e))
                await asyncio.sleep(1.0)


async def _ensure_stream(js: JetStreamContext, name: str, subjects: list[str]) -> str:
    """Create the stream if it is missing; return the subject to publish to."""
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=subjects,
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
            )
        )
        return subjects[0]
    return (info.config.subjects or subjects)[0]
