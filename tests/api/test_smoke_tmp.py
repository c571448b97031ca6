from apikit import World


def test_world_builds(world: World) -> None:
    r = world.client.get("/api/v1/session", headers=world.alpha.auth("operator"))
    assert r.status_code == 200, r.text
    print(r.json())
