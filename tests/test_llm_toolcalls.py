"""The incremental reader of guided tool-call JSON (tool_choice required on the real engine)."""

from __future__ import annotations

import json
import random

import pytest

from lexia.engines.toolcalls import ToolArrayStream, required_tools_schema

CASES = [
    '[{"name": "get_weather", "parameters": {"city": "Par\\"is", "n": [1, {"a": "}"}]}}, {"parameters": {"x": 1}, "name": "other"}]',
    '[ { "name" : "a" , "parameters" : 5 } ]',
    '[{"name":"b","parameters":"str,}\\\\"}]',
    '[{"name":"c","parameters":{}}]',
    '[\n  {"extra": [1, {"name": "zz"}], "name": "d\\u00e9", "parameters": {"k": true}}\n]',
]


@pytest.mark.parametrize("text", CASES)
def test_calls_are_rebuilt_whatever_the_fragmentation(text: str) -> None:
    rng = random.Random(7)
    for _ in range(100):
        reader = ToolArrayStream()
        deltas = []
        i = 0
        while i < len(text):
            step = rng.randint(1, 6)
            deltas += reader.feed(text[i : i + step])
            i += step
        calls: dict[int, dict[str, str]] = {}
        for delta in deltas:
            call = calls.setdefault(delta.index, {"name": "", "arguments": "", "id": ""})
            if delta.name is not None:
                assert not call["name"], "the name comes once, with the id"
                call["name"], call["id"] = delta.name, delta.id or ""
            else:
                assert call["name"], "arguments come after the name"
            call["arguments"] += delta.arguments
        expected = json.loads(text)
        assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
            (e["name"], e["parameters"]) for e in expected
        ]
        assert all(c["id"].startswith("call_") for c in calls.values())
        assert reader.calls == len(expected)


def test_required_schema_lists_each_tool_and_honours_parallel_calls() -> None:
    tools = [
        {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
        {"type": "function", "function": {"name": "b"}},
    ]
    schema = required_tools_schema(tools, parallel=False)
    assert schema["minItems"] == 1 and schema["maxItems"] == 1
    names = [branch["properties"]["name"]["enum"] for branch in schema["items"]["anyOf"]]
    assert names == [["a"], ["b"]]
    assert schema["items"]["anyOf"][1]["properties"]["parameters"] == {"type": "object", "properties": {}}
    assert "maxItems" not in required_tools_schema(tools, parallel=True)
