"""Webhook push: each webhook a consumer of its queue, posting signed JSON over HTTP."""

from __future__ import annotations

from .delivery import WebhookRunner, WebhookStats
from .manager import Webhooks

__all__ = ["WebhookRunner", "WebhookStats", "Webhooks"]
