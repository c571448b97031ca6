"""``meterdesk ingest-hj212`` as an operator runs it: set up through the CLI, start the service
as its own process, push one packet over TCP, stop it with SIGTERM (SQLite in a data folder)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_cli import ORG, data_dir, open_account, run, run_json, set_up_places

from meterdesk.devices.codecs.hj212 import Hj212Decoder, Hj212Message, encode_message

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]  # the fixture, used by name
METERDESK = Path(sys.executable).parent / "meterdesk"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def push(port: int, data: bytes) -> Hj212Message:
    """Connect (retrying while the service starts), send, return the first answer."""
    deadline = time.monotonic() + 30
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            assert time.monotonic() < deadline, "ingest-hj212 never listened"
            await asyncio.sleep(0.2)
    writer.write(data)
    decoder = Hj212Decoder()
    try:
        while not (found := decoder.feed(await asyncio.wait_for(reader.read(4096), 20))):
            pass
    finally:
        writer.close()
    return found[0]


def test_ingest_hj212_takes_a_packet_and_stops_on_sigterm(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    run("meter", "create", "M2", *ORG, "--room", "Park/B1/F1/101", "--protocol", "dlt645",
        "--address", "000000000002")  # fmt: skip
    open_account(customer)  # M1; M2 has no account: its reading is stored, not billed
    run("gateway", "create", "GW-HJ", *ORG, "--site", "Park", "--uplink", "hj212",
        "--access-password", "old-one")  # fmt: skip
    set_password = run_json("gateway", "set-password", "GW-HJ", *ORG, "--password", "s3cret")
    assert set_password["access_password_set"] is True
    listed = run_json("gateway", "list", *ORG)
    assert "access_password_hash" not in listed[0] and listed[0]["access_password_set"] is True

    port = free_port()
    env = {**os.environ, "METERDESK_DATA_DIR": str(data_dir)}
    service = subprocess.Popen(
        [str(METERDESK), "ingest-hj212", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        at = datetime.now(UTC) + timedelta(minutes=1)
        local = at.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d%H%M%S")
        fields = (("QN", "1"), ("ST", "22"), ("CN", "2011"), ("PW", "s3cret"), ("MN", "GW-HJ"))
        message = Hj212Message(
            (*fields, ("Flag", "5")),
            ((("DataTime", local),), (("000000000002-Cou", "12.5"),)),
        )
        answer = asyncio.run(push(port, encode_message(message)))
        assert (answer.cn, answer.qn) == ("9014", "1")
    finally:
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=30)
    assert service.returncode == 0, err
    assert f"listening for HJ212 gateways on 127.0.0.1:{port}" in err
    assert "1 packets in 1 commits, 1 readings accepted" in out
    assert run_json("gateway", "list", *ORG)[0]["state"] == "online"
