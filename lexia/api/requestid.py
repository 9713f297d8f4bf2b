"""Request ids: echo a well-formed client X-Request-ID, else generate req_<ULID>."""

from __future__ import annotations

import re
from typing import Any

from lexia.ids import new_request_id

_VALID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
STATE_KEY = "lexia.request_id"


def request_id(scope: Any) -> str:
    """The id of this request, computed once and kept in the scope state."""
    state = scope.setdefault("state", {})
    rid = state.get(STATE_KEY)
    if rid is None:
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id" and _VALID.match(value):
                rid = value.decode()
                break
        else:
            rid = new_request_id()
        state[STATE_KEY] = rid
    return str(rid)
