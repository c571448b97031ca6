"""``meterdesk user …`` and ``meterdesk serve``'s server, end to end on the embedded SQLite."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from meterdesk.access import login, service
from meterdesk.access.credentials import token_principal
from meterdesk.api.serve import server
from meterdesk.cli import common as cli_common
from meterdesk.cli.users import user_cli
from meterdesk.shared.errors import NotFoundError
from meterdesk.sites import service as sites

PASSWORD = "a long enough password"  # noqa: S105 - a test password


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("METERDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("METERDESK_DATABASE_URL", raising=False)
    monkeypatch.setenv("METERDESK_PASSWORD", PASSWORD)
    cli_common.app.cache_clear()
    sites.create_organisation(cli_common.app().db, name="Sunrise")
    yield "Sunrise"
    cli_common.app().db.engine.dispose()
    cli_common.app.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(user_cli, list(args))
    return result.exit_code, result.output


def test_create_a_user_who_can_log_in(org: str) -> None:
    code, out = invoke("create", "alice", "--org", org, "--role", "admin", "--json")
    assert code == 0, out
    assert json.loads(out)["role"] == "admin"
    identity = login.authenticate(
        cli_common.app().db, username="alice", password=PASSWORD, address="cli"
    )
    assert [m.role.value for m in identity.memberships] == ["admin"]


def test_create_refuses_an_unknown_role_and_a_taken_name(org: str) -> None:
    assert invoke("create", "bob", "--org", org, "--role", "boss")[0] == 2
    assert invoke("create", "bob", "--org", org, "--role", "cashier")[0] == 0
    assert invoke("create", "bob", "--org", org, "--role", "cashier")[0] == 4


def test_set_role_and_add_to_another_organisation(org: str) -> None:
    invoke("create", "carol", "--org", org, "--role", "cashier")
    assert invoke("set-role", "carol", "--org", org, "--role", "operator")[0] == 0
    sites.create_organisation(cli_common.app().db, name="Moonrise")
    assert invoke("add", "carol", "--org", "Moonrise", "--role", "readonly")[0] == 0
    assert invoke("set-role", "nobody", "--org", org, "--role", "operator")[0] == 3


def test_password_change(org: str, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("create", "dave", "--org", org, "--role", "cashier")
    monkeypatch.setenv("METERDESK_PASSWORD", "another long password")
    assert invoke("password", "dave")[0] == 0
    db = cli_common.app().db
    new = "another long password"
    assert login.authenticate(db, username="dave", password=new, address="cli")


def test_token_create_and_revoke(org: str) -> None:
    invoke("create", "uplink", "--org", org, "--role", "operator", "--no-password")
    code, out = invoke("token", "create", "uplink", "--org", org, "--name", "gateway", "--json")
    assert code == 0, out
    made = json.loads(out)
    db = cli_common.app().db
    assert token_principal(db, token=made["token"]) is not None
    assert invoke("token", "revoke", str(made["id"]), "--org", org)[0] == 0
    assert token_principal(db, token=made["token"]) is None
    assert invoke("token", "revoke", "999", "--org", org)[0] == 3


def test_token_for_an_unknown_user_fails(org: str) -> None:
    with pytest.raises(NotFoundError):
        service.user_id_by_username(cli_common.app().db, username="ghost")
    assert invoke("token", "create", "ghost", "--org", org, "--name", "x")[0] == 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_answers_the_openapi_document_and_the_docs_without_a_cdn(org: str) -> None:
    port = _free_port()
    running = server(cli_common.app(), port=port, log_level="warning")
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not running.started and time.monotonic() < deadline:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert (
            httpx2.get(f"{base}/openapi.json", timeout=5).json()["info"]["title"] == "meterdesk API"
        )
        page = httpx2.get(f"{base}/api/docs", timeout=5).text
        assert "/api/static/swagger-ui/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        bundle = httpx2.get(f"{base}/api/static/swagger-ui/swagger-ui-bundle.js", timeout=5)
        assert bundle.status_code == 200 and len(bundle.content) > 1_000_000
    finally:
        running.should_exit = True
        thread.join(timeout=10)
