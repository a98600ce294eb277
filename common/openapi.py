"""The OpenAPI schema's shared error answers: docs/api.md promises one error body for every 4xx
(and the 503 of an outage), so the schema says so once for every operation, where
clients and the schema fuzz test can check it."""

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error answer (docs/api.md, Errors).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Machine-readable, e.g. `invalid`, `not_found`."},
                "message": {"type": "string", "description": "A sentence for people."},
                "fields": {
                    "type": "object",
                    "description": "Validation errors only: field path (`predictions[3].confidence`) to reasons.",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
            "required": ["code", "message"],
            "additionalProperties": False,
        },
    },
    "required": ["error"],
    "additionalProperties": False,
}
# A range key covers every 4xx the operation can give (400, 401, 403, 404, 409, 413, 415,
# 429, ...) without claiming that each one is possible everywhere.
ERROR_RESPONSES = {
    "4XX": "Refused: invalid input, not authenticated, not allowed, not found, conflict, too large.",
    "503": "The database or object storage is unavailable; retry after `Retry-After` seconds.",
}


def error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: the error body on every operation's error answers."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_RESPONSES.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                # Explicit error answers (a 409 with only a description) carry the same body.
                if str(status)[0] in "45":
                    response["content"] = content
    return result
