"""Notifications (F-NOTIFY): an outbox written in the caller's transaction, delivered after
commit by :mod:`~meterdesk.notifications.dispatcher` through SMS, voice, e-mail, WeChat, app push,
webhooks and a log channel. See ``docs/notifications.md``."""
