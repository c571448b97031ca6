"""API test fixtures; they live in ``apikit`` so test modules can import its helpers by a name
that no other conftest shares."""

from apikit import alpha, any_world, bravo, client, template, world

__all__ = ["alpha", "any_world", "bravo", "client", "template", "world"]
