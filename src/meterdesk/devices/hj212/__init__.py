"""The HJ212-2017 uplink (F-PROTO, F-GATEWAY): gateways connect over TCP and push data packets;
see ``docs/hj212.md``. ``model`` is the pure mapping, ``store`` the group commit's transaction,
``server`` the TCP side."""
