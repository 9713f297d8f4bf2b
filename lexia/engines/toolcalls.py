"""Tool calls out of guided JSON: stream `[{"name": …, "parameters": {…}}, …]` as call deltas."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from lexia.engines.base import ToolCallDelta


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def required_tools_schema(tools: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """JSON schema of a non-empty array of {name, parameters} calls to the given tools."""
    branches = []
    for tool in tools:
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"type": "string", "enum": [function["name"]]}, "parameters": parameters},
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": branches}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


@dataclass
class _Call:
    """The element being read: its key state, name and argument text."""

    key: str | None = None
    expecting_key: bool = True
    name: str | None = None
    name_raw: list[str] = field(default_factory=list)
    in_name: bool = False
    in_args: bool = False
    args_opener: str = ""
    args_pending: str = ""
    header_sent: bool = False


class ToolArrayStream:
    """Incremental reader of the JSON array that guided decoding produces for tool_choice required.

    Feed text as it is generated; get ToolCallDelta lists back: per call, first a delta with
    id and name (and any argument text already read), then argument fragments, the raw JSON
    text of `parameters` exactly as generated.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._index = -1
        self._call: _Call | None = None
        self._arg_depth = 0
        self._out: list[ToolCallDelta] = []

    @property
    def calls(self) -> int:
        """Number of calls started so far."""
        return self._index + 1

    def feed(self, text: str) -> list[ToolCallDelta]:
        """Consume generated text; return the deltas it completes."""
        for char in text:
            self._step(char)
        self._flush()
        out, self._out = self._out, []
        return out

    def _step(self, char: str) -> None:
        call = self._call
        if call is not None and call.in_args:
            self._step_args(call, char)
            return
        if self._in_string:
            if call is not None and call.in_name:
                call.name_raw.append(char)
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._in_string = False
                if call is not None and call.in_name:
                    call.in_name = False
                    call.name = json.loads('"' + "".join(call.name_raw))
                elif call is not None and self._depth == 2 and call.expecting_key:
                    call.key = "".join(call.name_raw)
                    call.name_raw.clear()
            elif call is not None and self._depth == 2 and call.expecting_key:
                call.name_raw.append(char)
            return
        if char == '"':
            self._in_string = True
            if call is not None and self._depth == 2 and not call.expecting_key and call.key == "name":
                call.in_name = True
                call.name_raw.clear()
            elif call is not None and self._depth == 2:
                call.name_raw.clear()
            return
        if char in "[{":
            self._depth += 1
            if self._depth == 2 and char == "{":
                self._index += 1
                self._call = _Call()
        elif char in "]}":
            self._depth -= 1
            if self._depth == 1:
                self._flush()
                self._call = None
        elif call is not None and self._depth == 2:
            if char == ":":
                call.expecting_key = False
                if call.key == "parameters":
                    call.in_args = True
                    call.args_opener = ""
            elif char == ",":
                call.expecting_key = True
                call.key = None

    def _step_args(self, call: _Call, char: str) -> None:
        if not call.args_opener:
            if char.isspace():
                return
            call.args_opener = char
            self._arg_depth = 0
        if call.args_opener in "[{":
            call.args_pending += char
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif char == "\\":
                    self._escape = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "[{":
                self._arg_depth += 1
            elif char in "]}":
                self._arg_depth -= 1
                if self._arg_depth == 0:
                    call.in_args = False
            return
        if call.args_opener == '"':
            call.args_pending += char
            if self._arg_depth == 0:  # the opening quote
                self._arg_depth = 1
            elif self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                call.in_args = False
            return
        if char in ",}" or char.isspace():
            call.in_args = False
            self._step(char)
            return
        call.args_pending += char

    def _flush(self) -> None:
        call = self._call
        if call is None or call.name is None:
            return
        if not call.header_sent:
            call.header_sent = True
            pending, call.args_pending = call.args_pending, ""
            self._out.append(ToolCallDelta(self._index, id=new_call_id(), name=call.name, arguments=pending))
        elif call.args_pending:
            pending, call.args_pending = call.args_pending, ""
            self._out.append(ToolCallDelta(self._index, arguments=pending))
