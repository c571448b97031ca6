"""What every request handler can reach: the running application and the API's own settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from argon2 import PasswordHasher

from meterdesk.access.credentials import SessionPolicy
from meterdesk.access.model import LoginPolicy
from meterdesk.access.service import DEFAULT_HASHER
from meterdesk.bootstrap import App

SESSION_COOKIE = "meterdesk_session"
CSRF_COOKIE = "meterdesk_csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class ApiConfig:
    hasher: PasswordHasher = DEFAULT_HASHER
    login_policy: LoginPolicy = field(default_factory=LoginPolicy)
    session_policy: SessionPolicy = field(default_factory=SessionPolicy)
    cookie_secure: bool = False  # set True when served over HTTPS
    max_upload_bytes: int = 10 * 1024 * 1024
    max_export_rows: int = 100_000


@dataclass
class ApiContext:
    app: App
    config: ApiConfig
    # The long-lived Ingestor keeps caches and is not thread-safe; request threads take turns.
    ingest_lock: threading.Lock = field(default_factory=threading.Lock)
