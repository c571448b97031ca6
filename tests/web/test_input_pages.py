"""Bad input in the console's own text fields (JSON typed into a textarea): said in the page,
never a 500."""

from __future__ import annotations

from apikit import World
from consolekit import Console

DEEP = "[" * 50_000 + "]" * 50_000  # within the form's length limit


def test_a_tariff_draft_nested_too_deeply_is_said_in_the_page(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")

    answer = console.post("/tariffs/check", {"definition": DEEP, "day": "2026-11-02"})

    assert answer.status_code == 200, answer.text  # RecursionError: a 500
    assert "JSON: nested too deeply" in answer.text


def test_a_channel_config_nested_too_deeply_is_refused(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    deep = "[" * 10_000 + "]" * 10_000

    answer = console.post(
        "/settings/notifications/channels/log", {"provider": "log", "config": deep}
    )

    assert answer.status_code == 422, answer.text  # RecursionError: a 500
    assert "config: JSON nested too deeply" in answer.text


def test_the_meter_search_takes_percent_and_underscore_as_text(world: World) -> None:
    # They reached LIKE as wildcards: "_" or "%" listed every meter, "Alpha_M1" found Alpha-M1.
    console = Console(world.client, world.alpha, "readonly")

    found = {q: console.get(f"/meters?q={q}").text for q in ("Alpha-M1", "%25", "_", "Alpha_M1")}

    assert "Alpha-M1" in found["Alpha-M1"]
    assert not any("Alpha-M1" in found[q] for q in ("%25", "_", "Alpha_M1"))
