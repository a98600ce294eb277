"""Refuses oversized request bodies before anything reads them."""

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
