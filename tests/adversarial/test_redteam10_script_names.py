"""Red team 10: names written with combining marks, and names that imitate them.

Usernames were "letters, digits, spaces or . @ - _ '" by a regular expression whose letters are
Python's ``\\w``, which holds no combining mark: every Devanagari, Tamil, Bengali, Gujarati,
Thai… name that has a vowel sign or a virama (nearly all of them: "प्रिया" is four letters and
three marks) was refused. On main a token naming such a user was refused at the handshake
(403 `token_name`: the user could not connect at all) and a join in open mode got
`invalid_username`. The same names must now pass, and marks must not open a way to imitate
them: a variation selector, a doubled vowel sign, an overlay on a Latin name, a stack of accents
or a mark of another script stay refused.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.rawws import HandshakeRefused, RawWebSocket
from tests.adversarial.readiness import until_ready
from tests.adversarial.tokens import es256

# Everyday names of scripts written with marks (Hindi, Tamil, Bengali, Thai, Arabic with its
# vowel points, Khmer, Kannada).
NAMES = ["प्रिया", "ராஜா", "ক্ষিতি", "สมศักดิ์", "مُحَمَّد", "ខ្មែរ", "ಕನ್ನಡ"]
# Each renders like "प्रिया", "admin" or "Zoe" (or is drawn over its neighbours).
IMITATIONS = [
    "प्रिया\ufe00",  # a variation selector: renders as nothing
    "प्रिया".replace("ि", "िि"),  # the vowel sign twice
    "प्रिया".replace("ि", "िा"),  # two vowel signs on one letter
    "प्रिया\u034f",  # the combining grapheme joiner: nothing
    "a\u0336dmin",  # a stroke overlay on a Latin name
    "Zoe\u0301\u0301\u0301",  # a stack of accents
    "admin\u093f",  # a Devanagari vowel sign on a Latin letter
    "ख\u17b4",  # a Khmer inherent vowel (invisible) after a Devanagari letter
    "क" + "\u093f\u0947" * 3,  # more marks on one letter than any script needs
]


@pytest.fixture(scope="module")
def open_node() -> Iterator[Any]:
    with LocalCluster(1, nginx=False) as cluster:
        yield cluster.nodes[0]


async def test_a_token_naming_a_user_in_a_script_with_marks_is_taken(
    keyed: tuple[Any, Any],
) -> None:
    node, private = keyed
    await until_ready(node)
    refused: dict[str, int] = {}
    for number, name in enumerate(NAMES):
        token = es256(private, sub=f"user-{number}", name=name)
        try:
            ws = await RawWebSocket.connect("127.0.0.1", node.port, path=f"/chat?token={token}")
        except HandshakeRefused as exc:
            refused[name] = exc.status
            continue
        await ws.send({"type": "join", "room": "scripts", "username": "ignored"})
        joined = await ws.next_text(type="joined")
        assert joined["username"] == unicodedata.normalize("NFKC", name)
        await ws.close()
    # main: all 7 refused 403 (token_name): those users could not connect
    assert refused == {}


async def test_names_with_marks_join_and_are_shown_as_given_but_imitations_are_refused(
    open_node: Any,
) -> None:
    await until_ready(open_node)
    watcher = await RawWebSocket.connect("127.0.0.1", open_node.port)
    joiner = await RawWebSocket.connect("127.0.0.1", open_node.port)
    try:
        await watcher.send({"type": "join", "room": "marks", "username": "watcher"})
        await watcher.next_text(type="joined")
        refused = []
        for name in NAMES:
            await joiner.send({"type": "join", "room": "marks", "username": name, "id": name})
            answer = await joiner.next_text(id=name)
            if answer["type"] != "joined":
                refused.append(name)
                continue
            # What the others see is the name as given (NFKC, which these are already).
            assert answer["username"] == name
            await watcher.next_text(type="user_joined", username=name)
            await joiner.send({"type": "leave", "room": "marks", "id": name})
            await joiner.next_text(type="left", id=name)
        # main: all 7 refused invalid_username
        assert refused == []
        for imitation in IMITATIONS:
            frame = {"type": "join", "room": "marks", "username": imitation, "id": imitation}
            await joiner.send(frame)
            answer = await joiner.next_text(id=imitation)
            assert answer["type"] == "error" and answer["code"] == "invalid_username", answer
    finally:
        await watcher.close()
        await joiner.close()
