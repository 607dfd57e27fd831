"""The one per-event-loop registry that pollers and queue receivers share."""

from __future__ import annotations

import asyncio

from sagemaker_pipelines_provider.utils.loop_registry import LoopRegistry


def test_one_instance_per_key_per_loop_and_forget_only_the_current_one() -> None:
    registry: LoopRegistry[str, object] = LoopRegistry()
    made: list[object] = []

    def create() -> object:
        made.append(object())
        return made[-1]

    async def in_loop() -> tuple[object, object, object]:
        first = registry.get("a", create)
        again = registry.get("a", create)
        other = registry.get("b", create)
        registry.forget("a", object())  # a stale instance does not evict the current one
        assert registry.active() == {"a": first, "b": other}
        registry.forget("a", first)
        assert set(registry.active()) == {"b"}
        return first, again, other

    first, again, other = asyncio.run(in_loop())
    assert first is again and first is not other
    assert len(made) == 2

    async def fresh_loop() -> dict[str, object]:
        return registry.active()

    assert asyncio.run(fresh_loop()) == {}  # a new loop starts with no instances
    registry.forget("b", other)  # outside any loop: no-op, no error
