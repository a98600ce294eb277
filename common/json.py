"""JSON in and out of the API with orjson: strict (no NaN, no Infinity, valid UTF-8 only)
and several times faster than the standard library on large prediction batches."""

from decimal import Decimal

import orjson
from django.conf import settings
from django.utils.functional import Promise
from rest_framework.exceptions import ParseError
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


class FastJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.FLYWHEEL_MAX_BODY_BYTES
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            # Bodies without a Content-Length (chunked) are caught here instead of the middleware.
            from django.core.exceptions import RequestDataTooBig

            raise RequestDataTooBig(f"The request body is larger than {limit} bytes.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from None


class FastJSONRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return dumps(data)
