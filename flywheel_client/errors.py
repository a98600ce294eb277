"""What a failed call raises."""

import json


class FlywheelError(Exception):
    """The service refused a request (status 4xx/5xx, with the error body of docs/api.md), or it
    could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, list[str]] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}

    @classmethod
    def from_response(cls, status: int, body: bytes) -> "FlywheelError":
        try:
            error = json.loads(body)["error"]
            return cls(status, error.get("code", "error"), error.get("message", ""), error.get("fields"))
        except (ValueError, KeyError, TypeError):
            return cls(status, "error", body[:200].decode("utf-8", "replace"))
