"""WhiteNoise for static files, made to answer ASGI requests with a whole body.

WhiteNoise hands Django a FileResponse with a synchronous file iterator. Under ASGI Django cannot
stream that: it reads the whole file into memory anyway and warns on every static request. Our static
files are small (CSS, JS, vendored Chart.js and htmx), so under ASGI the middleware reads the file
here, in the middleware's own thread, and answers a plain response with WhiteNoise's headers (caching,
compression variants and ranges included). Under WSGI nothing changes.
"""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    @staticmethod
    def serve(static_file: Any, request: Any) -> Any:
        if not isinstance(request, ASGIRequest):
            return WhiteNoiseMiddleware.serve(static_file, request)
        response = static_file.get_response(request.method, request.META)
        body = b""
        if response.file is not None:
            try:
                body = response.file.read()
            finally:
                response.file.close()
        http_response = HttpResponse(body, status=int(response.status))
        del http_response["content-type"]
        for key, value in response.headers:
            http_response[key] = value
        return http_response
