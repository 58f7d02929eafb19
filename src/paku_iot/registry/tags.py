"""The tag rule. Tags are the backend's own labels for grouping devices (devices never see
them), so the rule lives here rather than in protocol.py."""

from __future__ import annotations

import re
from collections.abc import Iterable

from paku_iot.exceptions import InvalidInput

TAG_PATTERN = r"^[a-z0-9._-]{1,32}$"
MAX_TAGS = 20
TAG_RULE = "a tag is 1-32 characters of a-z, 0-9, '.', '_' and '-'"

_TAG = re.compile(TAG_PATTERN)


def is_valid_tag(tag: str) -> bool:
    # fullmatch: `$` alone would also accept a trailing newline.
    return _TAG.fullmatch(tag) is not None


def check_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise InvalidInput(f"{tag!r}: {TAG_RULE}", code="invalid_tag")
    return tag


def normalized_tags(tags: Iterable[str], *, limit: int | None = MAX_TAGS) -> tuple[str, ...]:
    """Checked, without duplicates, sorted; more than `limit` is refused."""
    unique = tuple(sorted({check_tag(t) for t in tags}))
    if limit is not None and len(unique) > limit:
        raise InvalidInput(f"at most {limit} tags per device", code="too_many_tags")
    return unique
