"""A club's players. `version` counts saves, for optimistic concurrency: the API and the admin
refuse a save that names a version other than the current one."""
from django.core.exceptions import ValidationError
from django.db import models, transaction

# The domain whose addresses the club refuses, so that tests have a value a person and an API
# client both see refused (an `errorlist` in the admin, a 400 from the API).
REFUSED_DOMAIN = "@invalid.example"


def refuse_invalid_domain(value):
    if value and value.lower().endswith(REFUSED_DOMAIN):
        raise ValidationError(
            "E-mail addresses at invalid.example are not accepted.", code="refused_domain"
        )


# The fields a person edits in the admin and an API client writes, in the order both show them.
EDITABLE_FIELDS = [
    "federation_id",
    "first_name",
    "last_name",
    "email",
    "mobile",
    "birth_date",
    "active",
    "shirt_number",
    "tags",
    "notes",
    "version",
]


class StaleVersion(Exception):
    """A save named a version that is no longer the current one."""

    def __init__(self, sent, current):
        super().__init__(f"version {sent} is not the current version {current}")
        self.sent = sent
        self.current = current


class Player(models.Model):
    federation_id = models.CharField(max_length=20, unique=True)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    email = models.EmailField(blank=True, validators=[refuse_invalid_domain])
    mobile = models.CharField(max_length=20, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    active = models.BooleanField(default=True)
    shirt_number = models.IntegerField(null=True, blank=True)
    tags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["updated_at", "id"]

    def __str__(self):
        return f"{self.first_name} {self.last_name} ({self.federation_id})"

    def save(self, *args, expected_version=None, **kwargs):
        """Saves and counts the save in `version`. With `expected_version`, first claims that
        version atomically (one UPDATE) and raises `StaleVersion` when another save came
        first."""
        if self.pk is None:
            self.version = 1
            return super().save(*args, **kwargs)
        with transaction.atomic():
            if expected_version is not None:
                claimed = Player.objects.filter(pk=self.pk, version=expected_version).update(
                    version=expected_version + 1
                )
                if not claimed:
                    current = Player.objects.filter(pk=self.pk).values_list("version", flat=True).first()
                    raise StaleVersion(expected_version, current)
                self.version = expected_version + 1
            else:
                current = Player.objects.filter(pk=self.pk).values_list("version", flat=True).first()
                self.version = (current or 0) + 1
            return super().save(*args, **kwargs)
