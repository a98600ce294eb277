"""Every API key made before keys were hashed becomes an ApiToken (its prefix and the
SHA-256 of the key, named "default") and the plain key is deleted, so every app keeps
working and no key is left in the database. One way only: a hash cannot be turned back
into the key, so going back leaves accounts without keys (issue new ones)."""

import hashlib

from django.db import migrations

# As accounts.tokens has them today, frozen here: this migration must not change with them.
PREFIX_LENGTH = 12


def hash_existing_tokens(apps, schema_editor):
    PlainToken = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("accounts", "ApiToken")
    plain = list(PlainToken.objects.all())
    made = ApiToken.objects.bulk_create([
        ApiToken(user_id=token.user_id, name="default", prefix=token.key[:PREFIX_LENGTH],
                 digest=hashlib.sha256(token.key.encode()).hexdigest())
        for token in plain
    ])
    # created_at is set on insert; keep when each key was really made.
    for api_token, token in zip(made, plain, strict=True):
        api_token.created_at = token.created
    ApiToken.objects.bulk_update(made, ["created_at"], batch_size=1000)
    PlainToken.objects.all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_api_tokens"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [migrations.RunPython(hash_existing_tokens, migrations.RunPython.noop, elidable=False)]
