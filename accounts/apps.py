from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts, roles and audit log"

    def ready(self):
        from accounts import signals

        signals.connect()
