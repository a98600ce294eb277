"""Refuses, before any view runs, requests no view could answer safely: oversized bodies,
and URLs with a NUL character (PostgreSQL stores none, so a lookup by such a path part
or query value was a 500)."""

from django.conf import settings

from common.errors import json_error_response


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            return json_error_response("malformed_body", "Content-Length is not a number.", 400)
        if length > settings.FLYWHEEL_MAX_BODY_BYTES:
            return json_error_response(
                "body_too_large",
                f"The request body is {length} bytes; the limit is {settings.FLYWHEEL_MAX_BODY_BYTES}.",
                413,
            )
        return self.get_response(request)


class NulInUrlMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info or "%00" in request.META.get("QUERY_STRING", ""):
            return json_error_response("malformed_url", "The URL may not contain the NUL character.", 400)
        return self.get_response(request)
