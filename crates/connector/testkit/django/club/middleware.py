"""Writes one line per request to `settings.REQUEST_LOG` (`METHOD PATH STATUS`), so that a
test can prove on the server's side what a client sent, e.g. that a run changed nothing; and,
when a test asks for it (`settings.EDIT_AFTER_READ`), makes a person's edit of a player right
after the API answered a read of it, so that the client's next write finds it changed."""
import json
import threading

from django.conf import settings

_lock = threading.Lock()


class EditAfterRead:
    """After a successful `GET /api/players/<id>/` of the player named in the file
    `settings.EDIT_AFTER_READ` (`{"id": 5, "changes": {"last_name": "..."}}`), saves those
    changes through the model, as a person would, and removes the file: once."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method != "GET" or response.status_code != 200:
            return response
        with _lock:
            try:
                with open(settings.EDIT_AFTER_READ, encoding="utf-8") as planned:
                    edit = json.load(planned)
            except FileNotFoundError:
                return response
            if request.path != f"/api/players/{edit['id']}/":
                return response
            from .models import Player

            player = Player.objects.get(pk=edit["id"])
            for name, value in edit["changes"].items():
                setattr(player, name, value)
            player.save()
            settings.EDIT_AFTER_READ.unlink()
        return response


class RequestLog:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        line = f"{request.method} {request.get_full_path()} {response.status_code}\n"
        with _lock:
            with open(settings.REQUEST_LOG, "a", encoding="utf-8") as log:
                log.write(line)
        return response
