"""Virtual meters and gateways on real sockets (F-SIM).

``meter`` and ``profiles``/``prepaid`` are the pure model (time is passed in); the ``*_server``
modules put it on DL/T 645, Modbus and CJ/T 188 sockets, ``gateway`` publishes it over MQTT,
``config`` describes whole buildings and ``cli`` runs it all (``meterdesk simulate``).
See ``docs/simulator.md``.
"""
