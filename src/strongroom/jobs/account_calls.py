"""Request and answer over the broker for user, database and root calls (scaled out).

Not Celery tasks: a worker's Celery pool may be busy with backups for hours, and these
calls answer a waiting HTTP request. Each worker consumes its host's call queue on its own
thread with kombu. The queue is not durable and goes with its worker; messages are
transient (never written to disk by the broker) and expire with their caller's timeout.
Each API call waits on its own exclusive reply queue, removed when the call ends. The
bodies are sealed by the service (see ``services/account_relay``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kombu import Connection, Consumer, Message, Producer, Queue
from kombu.mixins import ConsumerMixin
from kombu.pools import producers

log = logging.getLogger(__name__)


def calls_queue(prefix: str, host_id: str) -> str:
    return f"{prefix}.accounts.{host_id}"


class BrokerAccountTransport:
    """The API side: publish a call to the host's queue and wait for its answer."""

    def __init__(self, broker_url: str, *, prefix: str) -> None:
        self._url = broker_url
        self._prefix = prefix

    def request(self, route: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        correlation = uuid.uuid4().hex
        answers: list[dict[str, Any]] = []

        def on_answer(body: Any, msg: Message) -> None:
            if msg.properties.get("correlation_id") == correlation and isinstance(body, dict):
                answers.append(body)

        with Connection(self._url, connect_timeout=min(timeout, 3.0)) as conn:
            reply = Queue(
                f"{self._prefix}.reply.{correlation}",
                durable=False,
                exclusive=True,
                auto_delete=True,
            )
            with Consumer(
                conn, queues=[reply], callbacks=[on_answer], no_ack=True, accept=["json"]
            ):
                Producer(conn).publish(
                    message,
                    exchange="",
                    routing_key=calls_queue(self._prefix, route),
                    serializer="json",
                    reply_to=reply.name,
                    correlation_id=correlation,
                    delivery_mode=1,  # transient
                    expiration=timeout,  # the broker drops it when nobody waits any more
                    retry=False,
                )
                while not answers:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no answer from host {route!r} in {timeout:g} s")
                    try:
                        conn.drain_events(timeout=remaining)
                    except TimeoutError:
                        continue
        return answers[0]


class AccountCallConsumer(ConsumerMixin):
    """The worker side: answer this host's calls, a few at a time."""

    def __init__(
        self,
        broker_url: str,
        *,
        prefix: str,
        host_id: str,
        handle: Callable[[dict[str, Any]], dict[str, Any] | None],
        threads: int = 4,
    ) -> None:
        self.connection = Connection(broker_url)
        self._queue = Queue(calls_queue(prefix, host_id), durable=False, auto_delete=True)
        self._handle = handle
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="account-call")

    def get_consumers(self, consumer: Callable[..., Consumer], channel: Any) -> list[Consumer]:
        return [
            consumer(queues=[self._queue], callbacks=[self._received], no_ack=True, accept=["json"])
        ]

    def _received(self, body: Any, message: Message) -> None:
        reply_to = message.properties.get("reply_to")
        correlation = message.properties.get("correlation_id")
        if isinstance(body, dict) and reply_to:
            self._pool.submit(self._answer, body, str(reply_to), correlation)

    def _answer(self, body: dict[str, Any], reply_to: str, correlation: Any) -> None:
        try:
            answer = self._handle(body)
            if answer is None:
                return
            with producers[self.connection].acquire(block=True, timeout=10) as producer:
                producer.publish(
                    answer,
                    exchange="",
                    routing_key=reply_to,
                    serializer="json",
                    correlation_id=correlation,
                    delivery_mode=1,
                    retry=False,
                )
        except Exception:
            log.exception("account call not answered")

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="account-calls", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.should_stop = True
        self._pool.shutdown(wait=True)
