"""Limits on JSON that comes from outside (devices, API clients) and is stored and served.

Deep nesting is the one shape that is valid JSON yet breaks the layers after parsing: the
stdlib encoder (SQLAlchemy's JSON type) recurses once per level and runs out of stack below
Python's parser's own limit, and pydantic refuses to serialize past about 255 levels. A
sample or a setting never needs more than a few levels, so the limit is far below both.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deeply `value` nests: a scalar is 0, `{}` and `[]` are 1. Iterative, so any depth
    is measured without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1) for child in item)
    return deepest


def too_deep(value: Any) -> bool:
    return json_depth(value) > MAX_JSON_DEPTH
