"""The API's one error shape: ``{"error": code, "message": human}`` with a status.

Codes (docs/API.md, *Errors*): 400 ``bad_request``, 401 ``unauthorized``, 403 ``forbidden``,
404 ``not_found``, 405 ``method_not_allowed``, 409 ``subject_erased``, 411 ``length_required``,
413 ``too_large``, 415 ``unsupported_media``, 422 ``bad_params`` / ``bad_callback_url``,
429 ``rate_limited`` (with
``Retry-After``), 503 ``busy`` (with ``Retry-After``) / ``not_ready``, 504 ``timeout``, 500
``internal_error``. A message never echoes a value the caller sent (a subject id, a file name).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An answer other than success; raised anywhere under a route, turned into JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        """The JSON response of this error."""
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"error": code, "message": message}`` with ``status`` (and ``headers``)."""
    return JSONResponse({"error": code, "message": message}, status, headers=dict(headers or {}))


def unauthorized(message: str = "a valid API key is required") -> ApiError:
    """401: no, malformed, unknown or revoked key."""
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def forbidden(scope: str) -> ApiError:
    """403: the key lacks ``scope``."""
    return ApiError(403, "forbidden", f"this key lacks the {scope} scope")


def not_found(what: str = "no such job") -> ApiError:
    """404: unknown, or another tenant's (never said which)."""
    return ApiError(404, "not_found", what)


def bad_params(message: str) -> ApiError:
    """422: a field is missing or invalid."""
    return ApiError(422, "bad_params", message)


def too_large(limit: int) -> ApiError:
    """413: the upload is over ``max_upload_bytes``."""
    return ApiError(413, "too_large", f"the upload exceeds the limit of {limit} bytes")


def unsupported_media(message: str) -> ApiError:
    """415: not a supported image or video (from the first bytes)."""
    return ApiError(415, "unsupported_media", message)
