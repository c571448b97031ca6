"""Helpers for the console tests: log in as a role, send htmx-like requests with the CSRF header."""

from __future__ import annotations

from typing import Any

from apikit import Org, password_of
from fastapi.testclient import TestClient

HTMX = {"HX-Request": "true"}


class Console:
    """A logged-in browser: the session cookie, the CSRF token the page's meta tag holds."""

    def __init__(self, client: TestClient, org: Org, role: str, locale: str | None = None) -> None:
        """Log in (a fresh browser: no cookies); ``locale`` sets the user's own language."""
        self.client = client
        client.cookies.clear()
        username = org.username(role)
        answer = client.post(
            "/api/v1/session", json={"username": username, "password": password_of(username)}
        )
        assert answer.status_code == 200, answer.text
        self.csrf = str(answer.json()["csrf_token"])
        if locale is not None:
            chosen = client.put(
                "/api/v1/session/locale",
                json={"locale": locale},
                headers={"X-CSRF-Token": self.csrf},
            )
            assert chosen.status_code == 200, chosen.text

    def get(self, path: str, **headers: str) -> Any:
        return self.client.get(path, headers=headers, follow_redirects=False)

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> Any:
        headers = {**HTMX, **({"X-CSRF-Token": self.csrf} if csrf else {})}
        return self.client.post(path, data=data, headers=headers, follow_redirects=False, **kwargs)
