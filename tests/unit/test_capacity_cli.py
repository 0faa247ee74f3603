"""``roomcast capacity``: the page's worked example is the command's real output; bad input and
bad cost files exit 2 with a message; --costs replaces measured costs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from roomcast.admin.capacity_costs import MEASURED
from roomcast.cli import main

PAGE = Path(__file__).resolve().parents[2] / "docs" / "capacity.md"


def example() -> tuple[list[str], str]:
    """The worked example's arguments and printed output, from docs/capacity.md."""
    text = PAGE.read_text(encoding="utf-8")
    section = re.search(r"<!-- capacity-example -->\n(.*?)<!-- /capacity-example -->", text, re.S)
    assert section is not None
    found = re.search(r"```sh\n(.*?)\n```\n\n```text\n(.*?)```", section.group(1), re.S)
    assert found is not None
    words = shlex.split(found.group(1))
    assert words[:2] == [".venv/bin/roomcast", "capacity"]
    return words[1:], found.group(2)


def test_the_pages_example_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    argv, printed = example()
    assert "--connections" in argv
    assert main(argv) == 0
    assert capsys.readouterr().out == printed


def test_every_figure_names_its_binding_constraint(capsys: pytest.CaptureFixture[str]) -> None:
    argv, _ = example()
    assert main(argv) == 0
    out = capsys.readouterr().out
    for title in ("node processes", "nginx cores", "redis shards"):
        assert re.search(rf"^{title}: [\d,]+  \(bound by [a-z ,]+\)$", out, re.M), title
    assert re.search(r"^machines: [\d,]+ x 8 cores, 16 GiB", out, re.M)


@pytest.mark.parametrize(
    "argv",
    [
        ["capacity", "--connections", "0", "--rooms", "1", "--messages-per-second", "1"],
        ["capacity", "--connections", "10", "--rooms", "1", "--messages-per-second", "1",
         "--cpu-target", "1.5"],
    ],
)  # fmt: skip
def test_out_of_range_input_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("roomcast capacity: ")


def test_a_costs_file_replaces_measured_costs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["capacity", "--connections", "100000", "--rooms", "100", "--messages-per-second",
            "1000", "--show-costs"]  # fmt: skip
    assert main(argv) == 0
    measured = capsys.readouterr().out
    assert f"node_us_per_delivery = {MEASURED['node_us_per_delivery']:g}" in measured
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"node_us_per_delivery": 1000.0}))
    assert main([*argv, "--costs", str(costs)]) == 0
    replaced = capsys.readouterr().out
    assert "node_us_per_delivery = 1000" in replaced
    assert f"unit costs: {costs} over " in replaced

    def nodes(out: str) -> int:
        found = re.search(r"^node processes: ([\d,]+)", out, re.M)
        assert found is not None
        return int(found.group(1).replace(",", ""))

    assert nodes(replaced) > nodes(measured)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"nope": 1}', "unknown ['nope']"),
        ('{"node_us_per_setup": "fast"}', "a JSON object of numbers"),
        ("[1, 2]", "a JSON object of numbers"),
        ("{", "Expecting"),
    ],
)
def test_a_bad_costs_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, says: str
) -> None:
    costs = tmp_path / "costs.json"
    costs.write_text(content)
    argv = ["capacity", "--connections", "10", "--rooms", "1", "--messages-per-second", "1",
            "--costs", str(costs)]  # fmt: skip
    assert main(argv) == 2
    assert says in capsys.readouterr().err
