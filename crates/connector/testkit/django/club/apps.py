"""The club app: players, their API and their admin pages."""
from django.apps import AppConfig


class ClubConfig(AppConfig):
    name = "club"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.backends.signals import connection_created

        connection_created.connect(use_write_ahead_log)


def use_write_ahead_log(sender, connection, **kwargs):
    """Readers (a test reading the file) never block the site's writers, nor the other way."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
