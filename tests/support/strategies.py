"""Hypothesis strategies for hostile device input: topics and payloads a broken, buggy or
malicious device could send."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

DEVICE_IDS = st.from_regex(r"[A-Za-z0-9_-]{3,64}", fullmatch=True)
# What may stand where a device id belongs: real ids (own or other devices'), wildcards,
# empty levels, system topics, separators, control characters and anything at all.
ID_LEVELS = st.one_of(
    DEVICE_IDS,
    st.sampled_from(["dev-1", "dev-2", "+", "#", "", "$SYS", "ab", "a" * 65, "dév-1", "a b c"]),
    st.sampled_from(["\x00ab", "ab\x00", "a+b", "a#b", "a/b", "../x", "\ud800ab"]),
    st.text(max_size=70),
)
KINDS = st.sampled_from(
    ["telemetry", "state", "event", "cmd", "config", "", "+", "#", "TELEMETRY", "state "]
)
EVENT_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    st.sampled_from(["", "+", "#", "a" * 65, "ack", "ota", "$x", "a b"]),
    st.text(max_size=80),
)
ROOTS = st.sampled_from(["paku", "paku", "paku", "PAKU", "", "$SYS", "paku ", "+", "#"])


@st.composite
def topics(draw: st.DrawFn) -> str:
    """Mostly topic-shaped strings (so the interesting branches are reached), some anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    levels = [draw(ROOTS), draw(ID_LEVELS), draw(KINDS), *draw(st.lists(EVENT_NAMES, max_size=3))]
    return "/".join(levels)


def _nasty_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(),
        st.sampled_from(["\x00", "\ud800", "\udfff", "\U0001f600", "\ufeff", "\u2028", "'\"\\"]),
    )


JSON_VALUES = st.recursive(
    _nasty_scalars(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)

# ts as epoch milliseconds, RFC 3339 text, or anything else a device clock might produce.
TS_VALUES = st.one_of(
    st.integers(),
    st.integers(min_value=0, max_value=8_000_000_000_000),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=40),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00z", "1999-12-31T23:59:59Z"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)

STATE_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "online": st.one_of(st.booleans(), JSON_VALUES),
        "rssi": st.one_of(st.integers(-300, 100), JSON_VALUES),
        "fwVersion": st.one_of(st.text(max_size=80), JSON_VALUES),
        "configVersion": st.one_of(st.integers(), JSON_VALUES),
        "ts": TS_VALUES,
    },
)


def _encode(value: Any, *, ascii_only: bool) -> bytes:
    # allow_nan: NaN and Infinity go on the wire as the bare words a sloppy encoder writes.
    # surrogatepass: a lone surrogate goes out as the bytes a broken UTF-8 encoder writes.
    text = json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


def _with_duplicates(pairs: list[tuple[str, Any]]) -> bytes:
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v, allow_nan=True)}" for k, v in pairs)
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: str) -> bytes:
    if opener == "{":
        return ('{"a":' * depth + "1" + "}" * depth).encode()
    if opener == "[":
        return ("[" * depth + "1" + "]" * depth).encode()
    return ('{"a":' * depth).encode()  # never closed


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A well-formed message with a few bytes inserted, flipped or cut off."""
    data = bytearray(
        _encode(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES)), ascii_only=True)
    )
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "flip", "truncate"]))
        if action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=3))
        elif action == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        else:
            del data[position:]
    return bytes(data)


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: _encode(v, ascii_only=True)),
    JSON_VALUES.map(lambda v: _encode(v, ascii_only=False)),
    st.dictionaries(st.text(max_size=10), JSON_VALUES).map(lambda v: _encode(v, ascii_only=True)),
    st.builds(
        lambda body, ts: {**body, "ts": ts},
        st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3),
        TS_VALUES,
    ).map(lambda v: _encode(v, ascii_only=False)),
    STATE_VALUES.map(lambda v: _encode(v, ascii_only=False)),
    st.lists(
        st.tuples(st.sampled_from(["a", "ts", "online", "rssi"]), JSON_VALUES), max_size=6
    ).map(_with_duplicates),
    st.builds(_nested, st.integers(1, 3000), st.sampled_from(["{", "[", "open"])),
    st.integers(1, 6000).map(lambda n: b'{"n": ' + b"9" * n + b"}"),
    st.integers(-2000, 2000).map(lambda e: f'{{"n": 1.5e{e}}}'.encode()),
    st.sampled_from(
        [
            b"",
            b"null",
            b"{}",
            b'{"a": NaN}',
            b'{"a": -Infinity}',
            b'{"a": "\\u0000"}',
            b'{"a": "\x00"}',
            b'{"a": "\\ud800"}',
            b'{"a": "\\ud83d\\ude00"}',
            b"\xef\xbb\xbf{}",
            b'{"a": 1} {"b": 2}',
            b"\xc3\x28",
            b"\xed\xa0\x80",
            b'{"ts": 1780000000000}',
            b'{"online": true, "rssi": -60, "fwVersion": "1.0.0", "configVersion": 3}',
        ]
    ),
    _mutated(),
    st.integers(1, 5).map(lambda k: b'{"x": "' + b"a" * (k * 1000) + b'"}'),
)
