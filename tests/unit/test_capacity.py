"""The capacity model (roomcast.admin.capacity): a hand-computed example, which constraint binds,
monotonicity, and that the shipped defaults are the committed measurements."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.admin.capacity import (
    GIB,
    Deployment,
    UnitCosts,
    plan,
    steady_cores,
    subscribing_nodes,
)
from roomcast.admin.capacity_costs import MEASURED, SOURCE

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import capacity_costs  # noqa: E402  (bench/capacity_costs.py)

COSTS = UnitCosts(
    node_us_per_ingest=100,
    node_us_per_receive=50,
    node_us_per_delivery=10,
    node_us_per_setup=1000,
    node_kib_per_connection=4,
    node_base_kib=1024,
    nginx_us_per_delivery=5,
    nginx_us_per_setup=100,
    nginx_kib_per_connection=10,
    redis_us_per_message=50,
    redis_us_per_receive=10,
    redis_us_per_setup=20,
    redis_history_bytes_per_message=100,
    redis_room_bytes=200,
    redis_presence_bytes_per_member=20,
)
LOAD = Deployment(
    connections=100_000,
    rooms=10_000,  # rooms of 10
    messages_per_second=10_000,  # 100,000 deliveries/s
    session_seconds=1000,  # 100 setups/s
    storm_seconds=100,
    cpu_target=0.5,
    cores_per_machine=4,
    machine_memory_bytes=4 * GIB,
    memory_target=0.5,
    shard_memory_bytes=1 * GIB,
)


def asks(sized: object) -> dict[str, int]:
    return {c.name: c.needs for c in sized.constraints}  # type: ignore[attr-defined]


def test_hand_computed_example() -> None:
    # Node CPU: 100,000 deliveries x 10 us + 10,000 messages x (100 + k x 50 us) + 100 setups
    # x 1000 us = 2.1 + 0.5 k cores. N = 10: k = 10 (1 - 0.9^10) = 6.513, 5.357 / 10 = 0.536 >
    # 0.5; N = 11: k = 11 (1 - (10/11)^10) = 6.759, 5.480 / 11 = 0.498: 11 processes.
    # Storm: N = 5: 4.332 / 4 = 1.08 > 1; N = 6: 4.616 / 5 + 33.3 setups/s x 1 ms = 0.956.
    # Memory: 1 MiB + 100,000 / (N - 1) x 4 KiB <= 4 GiB x 0.5 / 4: N = 2 (the smallest, a
    # node may be lost). Descriptors: 100,000 / (N - 1) + 256 <= 65,536: N = 3.
    result = plan(LOAD, COSTS)
    assert asks(result.nodes) == {
        "cpu, steady": 11,
        "cpu, one node lost": 6,
        "memory": 2,
        "file descriptors": 3,
    }
    assert result.nodes.count == 11
    assert result.nodes.binding.name == "cpu, steady"
    assert result.machines == 3
    assert result.subscribing_nodes == pytest.approx(6.759, abs=1e-3)
    # nginx: 100,000 x 5 us + 100 x 100 us = 0.51 cores, at 0.5 each: 2.
    assert asks(result.nginx) == {"cpu, steady": 2, "cpu, one node lost": 1}
    # Redis: 10,000 x (50 + 6.759 x 10 us) + 100 x 20 us = 1.178 cores: 3 shards at 0.5.
    # Memory: 10,000 rooms x (100 kept x 200 B + 200 B) + 100,000 x 20 B = 204,000,000 B.
    assert result.redis_cores == pytest.approx(1.1779, abs=1e-3)
    assert result.redis_memory_bytes == pytest.approx(204_000_000)
    assert result.history_kept == 100
    assert asks(result.redis) == {"cpu, steady": 3, "cpu, one node lost": 2, "memory": 1}
    assert result.redis.count == 3


@pytest.mark.parametrize(
    ("change", "tier", "binds"),
    [
        ({"machine_memory_bytes": GIB // 8, "messages_per_second": 0}, "nodes", "memory"),
        ({"fd_limit": 2000, "messages_per_second": 0}, "nodes", "file descriptors"),
        ({"storm_seconds": 0.05, "messages_per_second": 0}, "nodes", "cpu, one node lost"),
        ({"history_size": 5000, "history_ttl": 86400, "shard_memory_bytes": GIB // 16}, "redis",
         "memory"),
    ],
)  # fmt: skip
def test_each_constraint_can_bind(change: dict[str, Any], tier: str, binds: str) -> None:
    result = plan(dataclasses.replace(LOAD, **change), COSTS)
    sized = result.nodes if tier == "nodes" else result.redis
    assert sized.binding.name == binds
    assert sized.count == max(asks(sized).values())


def test_history_kept_is_the_tightest_of_size_bytes_and_ttl() -> None:
    quiet = dataclasses.replace(LOAD, messages_per_second=10, history_ttl=60)  # 0.06 per room
    assert plan(quiet, COSTS).history_kept == 1
    small = dataclasses.replace(LOAD, history_bytes=2000)  # 10 entries of 200 B
    assert plan(small, COSTS).history_kept == 10
    assert plan(dataclasses.replace(LOAD, history_size=0), COSTS).redis_memory_bytes == (
        10_000 * 200 + 100_000 * 20
    )


def test_keeping_rooms_on_one_node_saves_the_receives() -> None:
    spread, kept = plan(LOAD, COSTS), plan(dataclasses.replace(LOAD, nodes_per_room=1), COSTS)
    assert kept.subscribing_nodes == 1
    # 2.1 + 0.5 x 1 = 2.6 cores at 0.5 each: 6 processes, where random placement needs 11.
    assert asks(kept.nodes)["cpu, steady"] == 6 < spread.nodes.count
    assert kept.redis_cores < spread.redis_cores


def test_subscribing_nodes() -> None:
    assert subscribing_nodes(1, 50) == 1
    assert subscribing_nodes(3, 1) == pytest.approx(1)
    assert subscribing_nodes(3, 100) == pytest.approx(3)
    assert subscribing_nodes(10_000, 20) == pytest.approx(20, rel=0.01)


def test_a_cluster_the_benchmarks_size_costs_what_the_terms_add_up_to() -> None:
    load = Deployment(connections=500, rooms=5, messages_per_second=100, session_seconds=1e12)
    cores = steady_cores(load, COSTS, 3)
    k = 3 * (1 - (2 / 3) ** 100)
    assert cores.nodes == pytest.approx((100 * 100 * 10 + 100 * (100 + k * 50)) / 1e6)
    assert cores.redis == pytest.approx(100 * (50 + k * 10) / 1e6)


GROWTH = st.floats(min_value=1.0, max_value=20.0)


@settings(max_examples=60, deadline=None)
@given(
    connections=st.integers(1_000, 5_000_000),
    rooms=st.integers(1, 200_000),
    messages=st.floats(0, 200_000),
    more=GROWTH,
    field=st.sampled_from(["connections", "messages_per_second", "rooms"]),
)
def test_more_load_never_needs_less(
    connections: int, rooms: int, messages: float, more: float, field: str
) -> None:
    rooms = min(rooms, connections)
    base = Deployment(connections, rooms, messages, room_size=10)
    value = getattr(base, field) * more
    if field == "messages_per_second":
        bigger = dataclasses.replace(base, messages_per_second=value)
    elif field == "connections":
        bigger = dataclasses.replace(base, connections=int(value))
    else:
        bigger = dataclasses.replace(base, rooms=int(value))
    small, large = plan(base, COSTS), plan(bigger, COSTS)
    assert large.nodes.count >= small.nodes.count
    assert large.nginx.count >= small.nginx.count
    assert large.redis.count >= small.redis.count


@settings(max_examples=40, deadline=None)
@given(target=st.floats(0.1, 1.0), lower=st.floats(0.1, 1.0))
def test_a_lower_cpu_target_never_needs_fewer(target: float, lower: float) -> None:
    base = dataclasses.replace(LOAD, cpu_target=target)
    tighter = dataclasses.replace(LOAD, cpu_target=target * lower)
    assert plan(tighter, COSTS).nodes.count >= plan(base, COSTS).nodes.count
    assert plan(tighter, COSTS).redis.count >= plan(base, COSTS).redis.count


def test_bad_inputs_are_refused_with_their_names() -> None:
    with pytest.raises(ValueError, match="connections"):
        Deployment(0, 1, 1)
    with pytest.raises(ValueError, match=r"out of range: storm_seconds, cpu_target"):
        Deployment(10, 1, 1, cpu_target=0, storm_seconds=0)
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        UnitCosts.from_mapping({**MEASURED, "nope": 1.0})
    with pytest.raises(ValueError, match="missing \\['node_base_kib'\\]"):
        UnitCosts.from_mapping({k: v for k, v in MEASURED.items() if k != "node_base_kib"})
    with pytest.raises(ValueError, match="finite"):
        UnitCosts.from_mapping({**MEASURED, "node_us_per_setup": -1.0})
    with pytest.raises(ValueError, match="base RSS"):
        plan(dataclasses.replace(LOAD, machine_memory_bytes=1024), COSTS)


def test_an_absurd_load_says_so_rather_than_search_forever() -> None:
    with pytest.raises(ValueError, match="2\\^24"):
        plan(dataclasses.replace(LOAD, connections=10**13), COSTS)


def test_shipped_defaults_are_the_committed_measurements() -> None:
    """Stale after a new `make bench` until `make capacity-costs` (or
    `python bench/capacity_costs.py`) regenerates node/roomcast/admin/capacity_costs.py."""
    latest, units = capacity_costs.load()
    assert capacity_costs.derive(latest, units) == MEASURED, "run: make capacity-costs"
    assert capacity_costs.source(latest, units) == SOURCE, "run: make capacity-costs"
    assert all(math.isfinite(v) and v >= 0 for v in MEASURED.values())
    UnitCosts.from_mapping(MEASURED)


def test_the_pages_generated_sections_are_current() -> None:
    page = (ROOT / "docs" / "capacity.md").read_text(encoding="utf-8")
    latest, units = capacity_costs.load()
    costs, origin = capacity_costs.derive(latest, units), capacity_costs.source(latest, units)
    for name, body in (
        ("capacity-costs", capacity_costs.costs_table(costs, origin)),
        ("capacity-example", capacity_costs.example(costs, origin)),
    ):
        found = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", page, re.S)
        assert found is not None and found.group(1) == body, f"{name}: run make capacity-costs"
