"""The site's addresses: Django's admin at /admin/ and the API at /api/players/."""
from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from club.views import PlayerViewSet

router = DefaultRouter()
router.register("players", PlayerViewSet, basename="player")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
]
