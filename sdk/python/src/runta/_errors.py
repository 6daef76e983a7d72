"""Exceptions: one class per API error code, all subclasses of :class:`RuntaError`."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Type


class RuntaError(Exception):
    """Base class of every error the SDK raises.

    ``code`` is the API error code (``not_found``, ``failed_precondition``, …) or
    ``None`` for client-side failures; ``status`` the HTTP status (``None`` when no
    response arrived); ``request_id`` the daemon's id for the request (also in its
    logs); ``field`` the dotted path of the offending request field, when one is named.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        request_id: Optional[str] = None,
        field: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id
        self.field = field

    def __str__(self) -> str:
        parts = []
        if self.code:
            parts.append(f"[{self.code}]")
        parts.append(self.message)
        if self.request_id:
            parts.append(f"(request_id={self.request_id})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"status={self.status!r}, request_id={self.request_id!r}, field={self.field!r})"
        )


class APIConnectionError(RuntaError):
    """The daemon could not be reached (refused, reset, DNS, TLS, timeout)."""


class APITimeoutError(APIConnectionError):
    """No response arrived in time."""


class ConflictError(RuntaError):
    """409: the name is taken (``already_exists``) or the runtime is in the wrong
    state for the request (``failed_precondition``)."""


class AlreadyExistsError(ConflictError):
    """``already_exists``: a runtime with this name exists."""


class FailedPreconditionError(ConflictError):
    """``failed_precondition``: the runtime's status does not allow the request."""


class NotFoundError(RuntaError):
    """``not_found``: no such runtime, file or route (or it belongs to another tenant)."""


class AuthenticationError(RuntaError):
    """``unauthenticated``: the token is missing, malformed or unknown."""


class PermissionDeniedError(RuntaError):
    """``permission_denied``: the token is valid but not allowed to do this."""


class InvalidArgumentError(RuntaError):
    """``invalid_argument``: a request value was rejected; ``field`` names it."""


class ResourceExhaustedError(RuntaError):
    """``resource_exhausted``: not enough capacity (memory, addresses) on the daemon."""


class UnavailableError(RuntaError):
    """``unavailable``: the daemon or the runtime's agent cannot serve the request now."""


class RateLimitedError(RuntaError):
    """``rate_limited``: too many requests."""


class DeadlineExceededError(RuntaError):
    """``deadline_exceeded``: the operation did not finish in time."""


class InternalError(RuntaError):
    """``internal``: the daemon hit an unexpected error (see its logs by request_id)."""


class UnimplementedError(RuntaError):
    """``unimplemented``: the daemon does not support this request."""


class WaitTimeoutError(DeadlineExceededError):
    """The SDK gave up waiting for a runtime to reach a status."""


class RuntimeFailedError(RuntaError):
    """A runtime ended in ``error`` / ``crashed`` (or vanished) while the SDK waited for
    it to run. ``runtime_error`` carries the runtime's own error text, if any."""

    def __init__(self, message: str, *, runtime_error: Optional[str] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.runtime_error = runtime_error


ERROR_CLASSES: Dict[str, Type[RuntaError]] = {
    "already_exists": AlreadyExistsError,
    "failed_precondition": FailedPreconditionError,
    "not_found": NotFoundError,
    "unauthenticated": AuthenticationError,
    "permission_denied": PermissionDeniedError,
    "invalid_argument": InvalidArgumentError,
    "resource_exhausted": ResourceExhaustedError,
    "unavailable": UnavailableError,
    "rate_limited": RateLimitedError,
    "deadline_exceeded": DeadlineExceededError,
    "internal": InternalError,
    "unimplemented": UnimplementedError,
}

_STATUS_FALLBACK: Dict[int, str] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "failed_precondition",
    413: "invalid_argument",
    422: "invalid_argument",
    429: "rate_limited",
    501: "unimplemented",
    503: "unavailable",
    504: "deadline_exceeded",
}


def error_from_response(status: int, headers: Dict[str, str], body: bytes) -> RuntaError:
    """Builds the exception for a non-2xx response from its error envelope; falls back
    to the HTTP status when the body is not the API's envelope."""
    request_id = headers.get("x-request-id")
    code: Optional[str] = None
    message = ""
    field: Optional[str] = None
    try:
        doc = json.loads(body.decode("utf-8")) if body else None
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = str(err.get("message", ""))
        field = err.get("field") if isinstance(err.get("field"), str) else None
        if isinstance(doc.get("request_id"), str):
            request_id = doc["request_id"]
    if code is None:
        code = _STATUS_FALLBACK.get(status, "internal" if status >= 500 else "invalid_argument")
    if not message:
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    cls = ERROR_CLASSES.get(code, RuntaError)
    return cls(message, code=code, status=status, request_id=request_id, field=field)
