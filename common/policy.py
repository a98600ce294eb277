"""Policies: a project's settings for one part of the loop (routing, labeling, feedback,
drift, retraining, the gate), each a frozen dataclass whose defaults are the documented ones.

A stored policy is read leniently (a key an older version wrote is ignored, a missing one
takes its default); a policy sent to the API is checked strictly: an
unknown key is refused with its path and, where one is close, the key probably meant
(common.serializers.PolicySerializer)."""

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Self


@dataclass(frozen=True)
class Policy:
    @classmethod
    def from_dict(cls, data: Mapping | None) -> Self:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def as_dict(self) -> dict:
        return asdict(self)


def unknown_key_reason(key: str, known: Iterable[str]) -> str:
    """Why `key` is refused: unknown, and, when a known key is spelled close to it, which."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"Unknown key; did you mean '{close[0]}'?" if close else "Unknown key."
