"""`python3 manage.py seed --players N`: the superuser (name and password from the
environment, `CLUBSITE_ADMIN_USER` and `CLUBSITE_ADMIN_PASSWORD`, with the API token
`CLUBSITE_ADMIN_TOKEN`) and N players that look like a Dutch club's: names with
tussenvoegsels and accents, mobile numbers written as +316… or 06-…, some blank e-mail
addresses and shirt numbers, a few inactive players. The same seed gives the same players."""
import datetime
import os
import random

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from club.models import Player

FIRST_NAMES = [
    "Jan", "Pieter", "Sanne", "Lotte", "Daan", "Emma", "Bram", "Fleur", "Thijs", "Noor",
    "Sem", "Julia", "Luuk", "Zoë", "Ruben", "Anouk", "Joost", "Marloes", "Kees", "Ilse",
    "Mohamed", "Yasmina", "Ömer", "Aylin", "Sjoerd", "Femke", "Gijs", "Maartje", "Rénee", "Wouter",
]
LAST_NAMES = [
    "de Vries", "Jansen", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "de Boer",
    "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker",
    "Brouwer", "de Wit", "Dijkstra", "Smits", "de Graaf", "van der Meer", "Kok", "Jacobs",
    "El Amrani", "Yılmaz", "van 't Hof", "Verhoeven", "Koster", "Prins",
]
TAGS = ["senioren", "jeugd", "keeper", "aanvoerder", "scheidsrechter", "vrijwilliger", "trainer"]
DOMAINS = ["example.com", "example.org", "example.net"]


def email_of(first, last, number):
    local = f"{first}.{last}".lower()
    for plain, fancy in (("e", "ë"), ("o", "ö"), ("e", "é"), ("i", "ı")):
        local = local.replace(fancy, plain)
    local = local.replace(" ", "").replace("'", "")
    return f"{local}{number}@{DOMAINS[number % len(DOMAINS)]}"


def mobile_of(rng):
    # Dutch mobile numbers in use start 061 to 065 (the numbering plan has no 066 or 067).
    digits = f"{rng.randrange(1, 6)}{rng.randrange(10**7):07d}"
    if rng.random() < 0.3:
        return f"06-{digits}"
    return f"+316{digits}"


def player(rng, number):
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    return Player(
        federation_id=f"FED{number:05d}",
        first_name=first,
        last_name=last,
        email="" if rng.random() < 0.1 else email_of(first, last, number),
        mobile="" if rng.random() < 0.05 else mobile_of(rng),
        birth_date=None
        if rng.random() < 0.05
        else datetime.date(1960, 1, 1) + datetime.timedelta(days=rng.randrange(365 * 55)),
        active=rng.random() >= 0.08,
        shirt_number=None if rng.random() < 0.25 else rng.randrange(1, 100),
        tags=sorted(rng.sample(TAGS, rng.randrange(0, 3))),
    )


class Command(BaseCommand):
    help = "Creates the superuser with its API token and seeds players."

    def add_arguments(self, parser):
        parser.add_argument("--players", type=int, default=0)
        parser.add_argument("--seed", type=int, default=12)

    def handle(self, *args, **options):
        user = os.environ.get("CLUBSITE_ADMIN_USER")
        password = os.environ.get("CLUBSITE_ADMIN_PASSWORD")
        token = os.environ.get("CLUBSITE_ADMIN_TOKEN")
        if not user or not password or not token:
            raise CommandError(
                "set CLUBSITE_ADMIN_USER, CLUBSITE_ADMIN_PASSWORD and CLUBSITE_ADMIN_TOKEN"
            )
        admin = get_user_model().objects.create_superuser(user, f"{user}@example.org", password)
        Token.objects.create(user=admin, key=token)
        rng = random.Random(options["seed"])
        Player.objects.bulk_create(player(rng, number) for number in range(1, options["players"] + 1))
