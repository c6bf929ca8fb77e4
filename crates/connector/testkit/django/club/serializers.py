"""The API's view of a player. Fields refuse what Django REST Framework refuses by default
(null for a text field: "This field may not be null."); `version` is optional on writes and,
when sent, must be the current one."""
from rest_framework import serializers

from .models import EDITABLE_FIELDS, Player


class PlayerSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(required=False, min_value=1)

    class Meta:
        model = Player
        fields = ["id", *EDITABLE_FIELDS, "updated_at"]
        read_only_fields = ["id", "updated_at"]

    def validate_tags(self, value):
        if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
            raise serializers.ValidationError("Tags must be a list of texts.")
        return value
