"""JSON in and out of the API with orjson: strict (no NaN, no Infinity, valid UTF-8 only,
no NUL characters) and several times faster than the standard library on large
prediction batches."""

from decimal import Decimal

import orjson
from django.conf import settings
from django.utils.functional import Promise
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer


def _default(value):
    if isinstance(value, Promise):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY)


def loads(data: bytes | str):
    return orjson.loads(data)


NUL_REASON = "May not contain the NUL character (\\u0000)."


def nul_path(value) -> str | None:
    """The path (`predictions[3].features.color`) of the first string in a parsed body that
    holds a NUL character, or None. PostgreSQL stores no NUL in text or jsonb: such a
    value would fail its INSERT with a 500 instead of being refused with its field."""
    stack = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "body"
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return path or "body"
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


def loads_request(raw: bytes):
    """A request body, parsed: ParseError when it is not strict JSON, ValidationError naming
    the field when a string in it holds a NUL."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"The body is not valid JSON: {exc}") from None
    # JSON can carry NUL only as the escape \u0000: bodies without one need no walk.
    if b"\\u0000" in raw:
        path = nul_path(data)
        if path is not None:
            raise ValidationError({path: [NUL_REASON]})
    return data


class FastJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.FLYWHEEL_MAX_BODY_BYTES
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            # Bodies without a Content-Length (chunked) are caught here instead of the middleware.
            from django.core.exceptions import RequestDataTooBig

            raise RequestDataTooBig(f"The request body is larger than {limit} bytes.")
        return loads_request(raw)


class FastJSONRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return dumps(data)
