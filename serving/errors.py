"""Errors as JSON bodies that name the problem, with the HTTP status a client can act on; never a stack trace."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

from twin_imaging.errors import (
    ArtifactError,
    InputError,
    ModelError,
    TwinConflictError,
    TwinError,
    TwinImagingError,
    UnknownAnalysisError,
    UnknownJobError,
    UnknownPatientError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal decided in the service itself (too large for a synchronous answer, a wrong content type...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "status": status, "title": HTTPStatus(status).phrase, **extra}


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, **extra), status_code=status)


def status_of(exc: BaseException) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, UnknownPatientError | UnknownAnalysisError | UnknownJobError):
        return HTTPStatus.NOT_FOUND
    if isinstance(exc, ArtifactError):
        return HTTPStatus.INTERNAL_SERVER_ERROR  # the store's bytes no longer match: the server's fault, said so
    if isinstance(exc, ModelError):
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(exc, InputError):
        return HTTPStatus.UNPROCESSABLE_ENTITY
    if isinstance(exc, TwinConflictError):
        return HTTPStatus.CONFLICT
    if isinstance(exc, TwinError):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.INTERNAL_SERVER_ERROR


def json_errors(func: Callable) -> Callable:
    """Wrap an API method (with a ``ctx`` parameter; plain or async): a twin-imaging error becomes its JSON error
    response."""

    def refused(exc: Exception, ctx: Any) -> JSONResponse:
        status = int(status_of(exc))
        log.info("%s refused: %s %s", func.__name__, status, type(exc).__name__)  # no patient data in logs
        ctx.response.status_code = status
        return error_response(status, str(exc))

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await func(self, *args, **kwargs)
            except (TwinImagingError, ApiError) as exc:
                return refused(exc, kwargs["ctx"])

        return async_wrapper

    @functools.wraps(func)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except (TwinImagingError, ApiError) as exc:
            return refused(exc, kwargs["ctx"])

    return wrapper
