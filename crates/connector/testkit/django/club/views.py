"""The players API: a ModelViewSet at /api/players/, paged by number (`page`, `page_size`),
ordered by `updated_at` then `id`, filtered by `updated_after` (at or after, an ISO 8601
time; one without an offset is Amsterdam time) and, through django-filter as most Django
REST Framework APIs filter, `federation_id` (one) and `federation_id__in` (several, by
commas). An update naming a stale `version` is refused with 409."""
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import exceptions, viewsets
from rest_framework.pagination import PageNumberPagination

from .models import Player, StaleVersion
from .serializers import PlayerSerializer


class PlayerPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class Conflict(exceptions.APIException):
    status_code = 409
    default_code = "stale_version"


class PlayerViewSet(viewsets.ModelViewSet):
    serializer_class = PlayerSerializer
    pagination_class = PlayerPagination
    filter_backends = [DjangoFilterBackend]
    filterset_fields = {"federation_id": ["exact", "in"]}

    def get_queryset(self):
        players = Player.objects.all().order_by("updated_at", "id")
        params = self.request.query_params
        after = params.get("updated_after")
        if after:
            when = parse_datetime(after.replace(" ", "+")) if "T" in after else None
            if when is None:
                raise exceptions.ValidationError(
                    {"updated_after": [f"{after!r} is not an ISO 8601 date and time."]}
                )
            if timezone.is_naive(when):
                when = timezone.make_aware(when)
            players = players.filter(updated_at__gte=when)
        return players

    def perform_create(self, serializer):
        serializer.validated_data.pop("version", None)
        serializer.save()

    def perform_update(self, serializer):
        sent = serializer.validated_data.pop("version", None)
        player = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(player, name, value)
        try:
            player.save(expected_version=sent)
        except StaleVersion as stale:
            raise Conflict(
                f"This player was changed by someone else: version {stale.sent} "
                f"is not the current version {stale.current}."
            )
