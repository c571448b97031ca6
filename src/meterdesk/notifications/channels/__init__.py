"""Channel adapters: one small async class per provider behind :class:`base.ChannelAdapter`."""
