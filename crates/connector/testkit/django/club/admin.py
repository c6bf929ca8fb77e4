"""The players in Django's admin: a change list with search and a filter, and the standard
change form. The form carries the version it was opened with and refuses to save over a
later save ("changed by someone else"), and the model refuses e-mail addresses at
invalid.example; both show in the form's `errorlist`."""
from django import forms
from django.contrib import admin

from .models import EDITABLE_FIELDS, Player, StaleVersion


class PlayerAdminForm(forms.ModelForm):
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Player
        fields = EDITABLE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["version"] = self.instance.version

    def clean(self):
        cleaned = super().clean()
        sent = cleaned.get("version")
        if self.instance.pk is not None and sent is not None:
            current = Player.objects.filter(pk=self.instance.pk).values_list("version", flat=True).first()
            if current != sent:
                raise forms.ValidationError(
                    "This player was changed by someone else while you were editing. "
                    "Reload the page to see the changes and try again.",
                    code="stale_version",
                )
        return cleaned


@admin.register(Player)
class PlayerAdmin(admin.ModelAdmin):
    form = PlayerAdminForm
    list_display = ("federation_id", "first_name", "last_name", "email", "mobile", "active", "updated_at")
    list_filter = ("active",)
    search_fields = ("federation_id", "first_name", "last_name", "email")
    readonly_fields = ("updated_at",)
    fields = PlayerAdminForm.Meta.fields + ["updated_at"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(expected_version=form.cleaned_data.get("version"))
        else:
            obj.save()
