"""The REST API: route handlers of queues, messages, auth, users and health."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .auth import login, logout, me, refresh, token
from .bodies import BODY_SCHEMAS, CheckedRequest
from .health import health
from .messages import MessageController
from .queues import QueueController, list_consumers, publish_fanout
from .results import ResultController
from .schedules import ScheduleController
from .tokens import TokenController
from .topics import TopicController
from .users import UserController
from .webhooks import WebhookController

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

__all__ = ["BODY_SCHEMAS", "ROUTES", "CheckedRequest"]

ROUTES: list[ControllerRouterHandler] = [
    QueueController,
    ScheduleController,
    MessageController,
    ResultController,
    UserController,
    TopicController,
    TokenController,
    WebhookController,
    publish_fanout,
    list_consumers,
    token,
    login,
    refresh,
    logout,
    me,
    health,
]
"""Every REST route handler, for `transports.app.create_app`."""
