"""Writes one line per request to `settings.REQUEST_LOG` (`METHOD PATH STATUS`), so that a
test can prove on the server's side what a client sent, e.g. that a run changed nothing."""
import threading

from django.conf import settings

_lock = threading.Lock()


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
