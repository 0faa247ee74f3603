"""The hooks page's JSON (docs/hooks.md, and the README's example call) is what the node sends
each hook and what it takes back: each call has the fields the node's request has, and each
answer shown is one the node accepts as the verdict it stands for."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from roomcast.wire import hooks
from roomcast.wire.hooks import HOOK_NAMES, HookName, parse_answer
from tests.support.docs import DOCS, section
from tests.support.paths import REPO

TEXT_BLOCK = re.compile(r"^```text\n(.*?)^```$", re.M | re.S)
# What the node sends each hook, with placeholder values: only the fields are compared.
REQUESTS = {
    "connect": hooks.connect_request("n1", "203.0.113.7", "/chat?x=1", {"cookie": "s=1"}),
    "join": hooks.join_request("n1", "c1", "lobby", "u-42", "alice", "203.0.113.7"),
    "publish": hooks.publish_request("n1", "c1", "m1", "lobby", "u-42", "alice", "hi"),
}
VERDICTS = {"allow": (hooks.Allow, hooks.ConnectAllow), "deny": (hooks.Deny,)}


def objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object written out in ``text``, one after the other."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (start := text.find("{", at)) != -1:
        value, at = decoder.raw_decode(text, start)
        found.append(value)
    return found


def shown(hook: HookName) -> list[dict[str, Any]]:
    text = section(DOCS / "hooks.md", hook)
    return [value for block in TEXT_BLOCK.findall(text) for value in objects(block)]


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_the_page_shows_each_call_with_the_fields_the_node_sends(hook: HookName) -> None:
    calls = [value for value in shown(hook) if "hook" in value]
    assert [call["hook"] for call in calls] == [hook]
    assert set(calls[0]) == set(json.loads(REQUESTS[hook]))


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_the_page_shows_answers_the_node_takes(hook: HookName) -> None:
    answers = [value for value in shown(hook) if "result" in value]
    assert answers
    for answer in answers:
        verdict = parse_answer(hook, json.dumps(answer).encode())
        expected = VERDICTS.get(answer["result"], (hooks.Rewrite,))
        assert isinstance(verdict, expected), (answer, verdict)


def test_the_readme_shows_the_publish_call_and_its_answers() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    hooks_part = readme[readme.index("## Hooks") : readme.index("## Example backend")]
    block = hooks_part[hooks_part.index("```sh") :]
    sent, answered = block.split("-d '", 1)[1].split("'", 1)
    assert set(json.loads(sent)) == set(json.loads(REQUESTS["publish"]))
    answers = objects(answered.split("```", 1)[0])
    assert {answer["result"] for answer in answers} == {"allow", "deny", "rewrite"}
    for answer in answers:
        parse_answer("publish", json.dumps(answer).encode())
