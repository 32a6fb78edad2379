"""Reading a request's body and query: JSON (RFC 8259, UTF-8 only), ``multipart/form-data``
with files, query parameters; each into its pydantic model, or a problem that says what is
wrong (400, 413, 415)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, PlainValidator, ValidationError, WithJsonSchema
from pydantic_core import from_json
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from edge.problems import HttpProblemError, violations

MULTIPART = "multipart/form-data"


@dataclass(frozen=True)
class FilePart:
    """A file sent as one part of a ``multipart/form-data`` body."""

    filename: str
    content_type: str
    data: bytes


def _file_part(value: Any) -> FilePart:
    if not isinstance(value, FilePart):
        raise ValueError("must be a file (a form part with a filename)")
    return value


# A form field holding a file; in OpenAPI a binary string.
UploadedFile = Annotated[FilePart, PlainValidator(_file_part), WithJsonSchema({"type": "string", "format": "binary"})]


def _refuse_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpProblemError(413, f"the request body is larger than {limit} bytes")


async def _capped(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they stream in, refused with 413 once past ``limit`` bytes."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpProblemError(413, f"the request body is larger than {limit} bytes")
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HttpProblemError(415, f"the body must not be compressed (Content-Encoding: {encoding}); send it as it is")
    _refuse_declared_length(request, limit)
    return b"".join([chunk async for chunk in _capped(request, limit)])


def _is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# What pydantic-core's JSON parser says, and what the client should do about it.
_JSON_PROBLEMS = {
    "recursion limit exceeded": "the body is nested too deeply (at most 200 levels of arrays and objects)",
    "number out of range": "a number in the body has too many digits (at most 4300)",
    "hex escape": "a \\u escape in the body is not a character (a lone UTF-16 surrogate such as \\ud800)",
}


def parse_json(raw: bytes) -> Any:
    """A JSON body (RFC 8259: UTF-8, no NaN or Infinity) as Python values, or a 400
    that says what is wrong.  pydantic-core's parser (jiter) never recurses in Python,
    stops at 200 levels of nesting and at 4300-digit numbers, and refuses invalid
    UTF-8 and lone surrogates; a number too large for a float (``1e999``) parses as
    infinity, which the request models refuse as "not a finite number"."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark: RFC 8259 lets a parser ignore it
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise HttpProblemError(400, "the body must be JSON in UTF-8 (it looks like UTF-16 or UTF-32)")
    if not raw.strip():
        return None
    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        _refuse_invalid_utf8(raw)  # the parser refuses it too, with a message less to the point
        message = str(exc)
        for found, detail in _JSON_PROBLEMS.items():
            if found in message:
                raise HttpProblemError(400, detail) from exc
        try:
            from_json(raw, allow_inf_nan=True)
        except ValueError:
            pass
        else:
            raise HttpProblemError(400, "NaN and Infinity are not JSON numbers: send finite numbers") from exc
        raise HttpProblemError(400, f"the body is not valid JSON: {message}") from exc


def _refuse_invalid_utf8(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpProblemError(
            400, f"the body is not valid UTF-8 (byte {exc.start} is not): send JSON in UTF-8"
        ) from exc


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    media, options = parse_options_header(request.headers.get("content-type", ""))
    if not _is_json(media.decode("latin-1").lower()):
        raise HttpProblemError(415, "send the body as JSON with 'Content-Type: application/json'")
    charset = options.get(b"charset", b"utf-8").decode("latin-1").lower()
    if charset not in ("utf-8", "utf8"):
        raise HttpProblemError(415, f"JSON is taken in UTF-8 only: send charset=utf-8 (or none), not charset={charset}")
    data = parse_json(await read_body(request, request.app.state.settings.max_body_bytes))
    if not isinstance(data, dict):
        raise HttpProblemError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HttpProblemError(400, "the request has invalid fields", violations(exc)) from exc


async def _form_values(form: FormData) -> dict[str, Any]:
    """The form's fields by name (each given once), file parts as :class:`FilePart`."""
    values: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name in values:
            raise HttpProblemError(400, f"the form field {name!r} is given twice")
        if isinstance(value, UploadFile):
            data = await value.read()
            values[name] = FilePart(value.filename or "", value.content_type or "", data)
        else:
            values[name] = value
    return values


async def read_form(request: Request, model: type[BaseModel]) -> BaseModel:
    """A ``multipart/form-data`` body, capped at ``max_upload_bytes`` while it
    streams in; file parts become :class:`FilePart` values."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != MULTIPART:
        raise HttpProblemError(415, "send the body as multipart/form-data")
    limit: int = request.app.state.settings.max_upload_bytes
    _refuse_declared_length(request, limit)
    parser = MultiPartParser(request.headers, _capped(request, limit), max_files=len(model.model_fields), max_fields=32)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HttpProblemError(400, f"the multipart body is malformed: {exc.message}") from exc
    try:
        values = await _form_values(form)
    finally:
        await form.close()
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise HttpProblemError(400, "the form has invalid fields", violations(exc)) from exc


def parse_query(request: Request, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise HttpProblemError(400, "the query has invalid parameters", violations(exc)) from exc
