"""meterdesk: an open-source prepaid water & electricity platform."""

__version__ = "0.1.0"
