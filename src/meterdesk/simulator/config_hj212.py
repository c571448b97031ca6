"""``[[gateway]]`` tables with ``uplink = "hj212"``: an HJ212-2017 gateway (docs/simulator.md).

[[gateway]]
sn = "HJ0001"                # required: the gateway's MN
uplink = "hj212"
server = "127.0.0.1:9212"    # the platform's ingest-hj212 listener
password = "123456"          # PW, as registered with the gateway on the platform
cn = "2051"                  # 2051 minute data | 2061 hour data
interval_s = 60              # simulated seconds between reads
resend_after_s = 30          # real seconds before an unanswered packet is re-sent
"""

from __future__ import annotations

import re

from meterdesk.shared.errors import ValidationError
from meterdesk.simulator.config_values import Table, check_keys, endpoint, typed
from meterdesk.simulator.hj212_gateway import DEFAULT_PASSWORD, Hj212GatewaySpec

UPLOAD_CNS = ("2051", "2061")
_TOKEN = re.compile(r"[!-~]+")  # printable ASCII; the codec's separators are refused below
KEYS = {"sn", "uplink", "server", "password", "cn", "interval_s", "resend_after_s"}


def hj212_gateway(table: Table, seed: int, where: str) -> Hj212GatewaySpec:
    check_keys(table, KEYS, where)
    mn = typed(table, "sn", str, None, where)
    if not mn:
        raise ValidationError(f"{where}: sn is required")
    host, port = endpoint(typed(table, "server", str, "127.0.0.1:9212", where), where)
    password = typed(table, "password", str, DEFAULT_PASSWORD, where)
    cn = typed(table, "cn", str, "2051", where)
    if cn not in UPLOAD_CNS:
        raise ValidationError(f"{where}: cn must be one of {list(UPLOAD_CNS)}")
    interval_s = float(typed(table, "interval_s", (int, float), 60, where))
    resend_after_s = float(typed(table, "resend_after_s", (int, float), 30, where))
    if interval_s <= 0 or resend_after_s <= 0:
        raise ValidationError(f"{where}: interval_s and resend_after_s must be positive")
    for text, what in ((mn, "sn"), (password, "password")):
        if not _TOKEN.fullmatch(text) or any(char in ";,=&" for char in text):
            raise ValidationError(f"{where}: {what} must be printable ASCII without ; , = &")
    return Hj212GatewaySpec(
        mn=mn,
        host=host,
        port=port,
        password=password,
        cn=cn,
        interval_s=interval_s,
        resend_after_s=resend_after_s,
        seed=seed,
    )
