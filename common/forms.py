"""What the web pages' forms share: a form is checked by the API's own input serializer,
and its refusals (the serializer's, or the domain's) are shown next to the field with the
API's words, under the paths the API's error body uses. Nothing is stored from a form that
failed."""

from rest_framework import serializers

from common.errors import DomainError, flatten_fields

# Refusals that belong to no single field go under this key, at the top of the form.
FORM = "non_field_errors"


def form_input(post, fields: tuple[str, ...]) -> dict:
    """The posted values the serializer reads; an empty box is a field left out, so the
    serializer's default applies as in an API call that omits it."""
    return {name: post[name] for name in fields if post.get(name, "") != ""}


def domain_errors(exc: DomainError, *, field: str | None = None) -> dict[str, list[str]]:
    """The domain's refusal, under the fields it names, else under `field`, else the form."""
    if exc.fields:
        return {name: list(messages) for name, messages in exc.fields.items()}
    return {field or FORM: [exc.message]}



def flat_errors(errors) -> dict[str, list[str]]:
    """A serializer's errors by the paths the API's error body uses ("routing.threshold",
    "features[2].max"), which are also the names of the form's fields."""
    return {FORM if path == "body" else path: reasons for path, reasons in flatten_fields(errors).items()}


def _kind(field: serializers.Field) -> str:
    if isinstance(field, serializers.BooleanField):
        return "boolean"
    if isinstance(field, serializers.ChoiceField):
        return "choice"
    if isinstance(field, serializers.IntegerField | serializers.FloatField):
        return "number"
    return "text"


def policy_form(section: str, serializer: serializers.Serializer, *, current: dict, defaults: dict,
                errors: dict[str, list[str]], posted: dict | None = None) -> list[dict]:
    """One row per field the API's policy serializer knows: its meaning (help_text), its
    default (the policy dataclass's), the project's value, and any refusal. A nested
    policy (drift.on_drift) gives a row per field of its own, under its path."""
    rows = []
    for name, field in serializer.fields.items():
        path = f"{section}.{name}"
        if isinstance(field, serializers.Serializer):
            rows += policy_form(path, field, current=current.get(name) or {}, defaults=defaults.get(name) or {},
                                errors=errors, posted=posted)
            continue
        secret = getattr(field, "write_only", False) or name.endswith("_secret")
        value = (posted or {}).get(path, current.get(name))
        rows.append({
            "name": path, "label": path.split(".", 1)[1].replace("_", " ").replace(".", ": "),
            "help": str(field.help_text or ""),
            "kind": _kind(field), "choices": list(getattr(field, "choices", {}) or {}),
            "value": "" if secret or value is None else value, "secret": secret,
            "is_set": bool(current.get(name)) if secret else None,
            "default": defaults.get(name), "errors": errors.get(path, []),
        })
    return rows


def policy_input(post, section: str, serializer: serializers.Serializer) -> dict:
    """What the form changes in one policy, as the API's PATCH body would say it: an empty
    number or secret box keeps the stored value (a secret is never shown to be edited)."""
    out = {}
    for name, field in serializer.fields.items():
        if isinstance(field, serializers.Serializer):
            nested = policy_input(post, f"{section}.{name}", field)
            if nested:
                out[name] = nested
            continue
        raw = post.get(f"{section}.{name}")
        if raw is None:
            continue
        secret = getattr(field, "write_only", False) or name.endswith("_secret")
        if raw == "" and (secret or _kind(field) in ("number", "boolean", "choice")):
            continue
        out[name] = raw
    return out
