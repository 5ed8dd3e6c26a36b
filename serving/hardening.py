"""BentoML behaviours a service inside a hospital network must not have, turned off in one place.

BentoML fetches a URL given in place of an uploaded file (a multipart text field, or a JSON body holding a URL)
and answers 500 when that fails. Here a file field takes an uploaded file only: anything else is a 400 naming the
field. (The JSON-body route is closed by the middleware, which requires multipart/form-data on file routes.)
A malformed multipart body also becomes a 400 (BentoML answers 500: it treats every parse error as its own).

BentoML logs every refused request as an ERROR with the traceback of the pydantic ValidationError, whose text holds
the values sent (``input_value='PAT-123'``): a patient identifier in the server log. A client's invalid request is
logged here as one INFO line naming the route and the fields, never their values.
"""

from __future__ import annotations

import logging
import sys

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

log = logging.getLogger(__name__)


def _invalid(kind: str, message: str, field: str) -> ValidationError:
    error = PydanticCustomError(kind, message)
    return ValidationError.from_exception_data("Input", [InitErrorDetails(type=error, loc=(field,), input="")])


def harden_bentoml() -> None:
    from _bentoml_impl.serde import MultipartSerde
    from _bentoml_impl.server import app as bentoml_app
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    parse_request = MultipartSerde.parse_request

    async def parse_multipart(self, request, cls):
        try:
            return await parse_request(self, request, cls)
        except (MultiPartException, HTTPException) as exc:
            detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
            raise _invalid("multipart_malformed", f"malformed multipart/form-data body: {detail}", "body") from None

    MultipartSerde.parse_request = parse_multipart

    async def ensure_file(obj):  # replaces MultipartSerde.ensure_file (a staticmethod)
        if isinstance(obj, UploadFile):
            return obj
        message = "an uploaded file part is expected (with a filename); text and URLs are not accepted"
        raise _invalid("file_expected", message, "file")

    MultipartSerde.ensure_file = staticmethod(ensure_file)

    log_exception = bentoml_app.log_exception

    def log_refusal(request, exc_info=True):  # replaces the module's log_exception, which logs values
        exc = sys.exc_info()[1]
        if isinstance(exc, ValidationError):
            fields = sorted({".".join(map(str, e["loc"])) or "body" for e in exc.errors(include_input=False)})
            log.info("%s %s refused: invalid %s", request.method, request.url.path, ", ".join(fields))
            return
        log_exception(request, exc_info)

    bentoml_app.log_exception = log_refusal
