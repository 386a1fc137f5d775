"""`MessageControl`: the rules of a queue that space, hold back and take back its messages.

`QueueState` inherits them: giving a message back with the queue's back-off
(`retry.RetryPolicy`) or a nack's own delay, pausing deliveries (until an
instant or until resumed), and cancelling or rescheduling a pending
message. A back-off is a delay like a delayed publish's: the message waits
on the same timer heap (`PendingOrder.backoff`), pending with
``deliver_at`` set, and the messages behind it flow.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .errors import InvalidTransition
from .journal import Drop, Requeue, Reschedule
from .messages import Entry
from .pending import created_of, unpack_cold
from .retry import requeue_delay_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from .journal import Op
    from .messages import QueueOptions
    from .pending import Item, PendingOrder

__all__ = ["MessageControl", "Trigger", "give_up_reason", "pause_deadline", "shown_options"]

Trigger = Literal["nack", "expired", "gone"]
"""Why a leased message comes back: a nack, its lease ran out, its consumer went away."""


def give_up_reason(options: QueueOptions, attempt: int, requeue: bool, reason: str) -> str | None:
    """Why a message given back after ``attempt`` deliveries leaves its queue, or ``None``.

    It stays (requeued) when asked to and ``max_attempts`` allows another try.
    """
    max_attempts = options.max_attempts
    if requeue and (max_attempts is None or attempt < max_attempts):
        return None
    return reason if not requeue else "max_attempts"


def pause_deadline(options: QueueOptions) -> float:
    """Until when ``options`` hold deliveries: 0 not paused, ``inf`` until resumed."""
    if not options.paused:
        return 0.0
    until = options.paused_until
    return math.inf if until is None else until.timestamp()


def shown_options(state: MessageControl, now: float) -> dict[str, Any]:
    """A queue's options as its view shows them: a pause that has run out shows as none."""
    fields = msgspec.structs.asdict(state.options)
    if not state.paused(now):
        fields["paused"] = False
        fields["paused_until"] = None
    return fields


class MessageControl:
    """Back-off, pause, cancel and reschedule, mixed into `QueueState`.

    Attributes:
        paused_until: deliveries wait until then (0: not paused; ``inf``:
            until resumed); follows the options (`pause_deadline`) and goes
            back to 0 in `QueueState.tick` once passed.
        draw: the random numbers the back-off jitter uses (a test may fix them).
    """

    name: str
    options: QueueOptions
    pending: PendingOrder
    processing: dict[int, Entry]
    _ops: list[Op]
    paused_until: float = 0.0
    draw: Callable[[], float] = staticmethod(random.random)

    def _dead_letter(self, item: Item, reason: str, now: float, *, drop: bool = False) -> None:
        raise NotImplementedError  # pragma: no cover - `QueueState` has it

    # -- back-off -----------------------------------------------------------------

    def _give_back(
        self,
        entry: Entry,
        requeue: bool,
        reason: str,
        now: float,
        trigger: Trigger = "nack",
        delay_ms: int | None = None,
    ) -> None:
        """Requeue a leased message (after its back-off) or let it leave the queue.

        ``delay_ms`` (a nack's own) overrides the queue's retry policy.
        """
        why = give_up_reason(self.options, entry.attempt, requeue, reason)
        if why is not None:
            self._dead_letter(entry, why, now)
            return
        entry.redelivered = True
        entry.consumer = None
        entry.lease_deadline = 0.0
        policy = self.options.retry
        wait = 0.0
        if policy is not None or delay_ms:
            draw = self.draw() if policy is not None and policy.jitter else 0.5
            wait = requeue_delay_ms(policy, entry.attempt, trigger, draw, delay_ms)
        self._requeue(entry, now + wait / 1000 if wait > 0 else 0.0, trigger)

    def _requeue(self, entry: Entry, deliver_at: float, trigger: str = "nack") -> None:
        """A message given back goes again first, or waits for ``deliver_at`` (a back-off)."""
        if deliver_at:
            entry.deliver_at = deliver_at
            self.pending.backoff(entry, hold=True)
        else:
            self.pending.requeue(entry)
        reason = entry.last_error if trigger == "nack" else None
        self._ops.append(
            Requeue(
                entry.id, entry.attempt, self.name, deliver_at, trigger, reason, entry.created_at
            )
        )

    # -- pause ----------------------------------------------------------------------

    def paused(self, now: float) -> bool:
        """Whether deliveries are held at ``now``."""
        return self.paused_until > now

    # -- cancel and reschedule ----------------------------------------------------------

    def _take_waiting(self, id: int, operation: str) -> Item | None:
        """Take pending (ready or delayed) message ``id`` out; ``None`` if it isn't here.

        Raises:
            InvalidTransition: it is processing (a lease holds it).
        """
        if id in self.processing:
            raise InvalidTransition(id, operation, "processing")
        item = self.pending.remove(id)
        return self.pending.remove_delayed(id) if item is None else item

    def cancel(self, id: int, by: str | None = None) -> bool:
        """Delete pending or delayed message ``id`` (``by`` whom); whether it was here.

        Raises:
            InvalidTransition: it is processing.
        """
        item = self._take_waiting(id, "cancel")
        if item is None:
            return False
        self._ops.append(Drop(id, "cancelled", by, created_of(item)))
        return True

    def cancel_stored(self, id: int, by: str | None = None, created: float = 0.0) -> None:
        """Delete a pending message that waits in shared storage, not in this node's memory."""
        self._ops.append(Drop(id, "cancelled", by, created))

    def reschedule(
        self, id: int, deliver_at: float | None, priority: int | None, now: float
    ) -> bool:
        """Make pending message ``id`` due at ``deliver_at`` (``None``: unchanged), ``priority``.

        A message due now goes to the tail of its priority. Returns whether it was here.

        Raises:
            InvalidTransition: it is processing.
        """
        item = self._take_waiting(id, "reschedule")
        if item is None:
            return False
        if isinstance(item, Entry):
            entry = item
        else:
            # Cold: its body is read from storage when it nears the head again.
            _, cold_priority, size = unpack_cold(item)
            entry = Entry(id, content=None, size=size, created_at=0.0, priority=cold_priority)
        if priority is not None:
            entry.priority = priority
        at = entry.deliver_at if deliver_at is None else deliver_at
        if at > now:
            entry.deliver_at = at
            self.pending.backoff(entry)
        else:
            at = entry.deliver_at = 0.0
            self.pending.append(entry)
        self._ops.append(Reschedule(id, self.name, at, entry.priority))
        return True

    def reschedule_stored(self, id: int, deliver_at: float, priority: int, now: float) -> None:
        """Reschedule a pending message that waits in shared storage (any node claims it)."""
        at = deliver_at if deliver_at > now else 0.0
        self._ops.append(Reschedule(id, self.name, at, priority))
