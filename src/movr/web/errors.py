"""Every failure becomes a 4xx/5xx answer that helps the user and leaks nothing.

Requests under `/api/` get `{"error": {"code", "message"}}` — also for what Flask, Werkzeug, APIFlask
(validation), the log-in throttle and Flask-WTF produce themselves; every other path gets an HTML page. Domain
errors carry their own status and a message meant for users; anything unexpected is logged with its
traceback and answered with a generic 500 that says nothing about the cause.
"""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import Response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.http import HTTP_STATUS_CODES

from movr.domain import errors

log = logging.getLogger("movr.web")

API_PREFIX = "/api/"

# Stable codes for errors the framework raises (domain errors bring their own `.code`).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}
HTTP_MESSAGES = {
    404: "there is nothing at this address",
    405: "this address does not accept that method",
    413: "the request body is too large",
    429: "too many attempts; wait a minute and try again",
    500: "something went wrong on our side; it has been logged",
}
PAGE_TITLES = {
    400: "That request did not work",
    401: "Please log in",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed here",
    409: "That did not work",
    413: "Too much data",
    422: "Please check what you entered",
    429: "Slow down",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}


class UnknownCity(errors.BadCity):
    """A city in a URL path that MovR does not serve: the resource does not exist."""

    code = "unknown_city"
    status = 404
    default_message = "MovR does not operate in that city"


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX)


def friendly(error: errors.MovrError) -> str:
    """A sentence for people: the domain's message, capitalized; never internals of a 5xx."""
    text = error.default_message if error.status >= 500 else error.message
    text = text.strip() or error.default_message
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def error_json(code: str, message: str, status: int, headers: Any = None) -> tuple[dict, int, Any]:
    return {"error": {"code": code, "message": message}}, status, headers or {}


def error_page(
    status: int,
    message: str,
    *,
    title: str | None = None,
    headers: Any = None,
    back: str | None = None,
    back_label: str | None = None,
) -> Response:
    try:
        body = render_template(
            "error.html",
            status=status,
            title=title or PAGE_TITLES.get(status, "That did not work"),
            message=message,
            back=back,
            back_label=back_label,
        )
    except Exception:  # the error page must not fail in turn (e.g. a broken template)
        log.exception("could not render the error page")
        body = "<!doctype html><title>MovR</title><h1>Something went wrong</h1>"
    return Response(body, status=status, headers=headers, mimetype="text/html")


def _validation_message(detail: Any) -> str:
    """`{"json": {"username": ["Too long."]}}` -> "username: Too long." (at most three fields)."""
    parts: list[str] = []
    if isinstance(detail, dict):
        for fields in detail.values():
            items = fields.items() if isinstance(fields, dict) else [("input", fields)]
            for name, messages in items:
                text = messages[0] if isinstance(messages, list) and messages else messages
                if isinstance(text, dict):  # nested field errors
                    text = "is not valid"
                parts.append(f"{name}: {str(text).rstrip('.')}")
    return "; ".join(parts[:3]) or "the input is not valid"


def init_app(app: APIFlask) -> None:
    @app.error_processor
    def http_error(error: HTTPError) -> Any:
        """Werkzeug's HTTP exceptions and APIFlask's validation errors."""
        status = error.status_code
        if status == 422 or (status == 400 and error.detail):
            message = _validation_message(error.detail)
            code = "invalid_input" if status == 422 else "bad_request"
        else:
            message = HTTP_MESSAGES.get(status) or str(error.message or HTTP_STATUS_CODES.get(status, "error")).lower()
            code = HTTP_CODES.get(status, "error")
        headers = dict(error.headers or {})
        if is_api_request():
            return error_json(code, message, status, headers)
        return error_page(status, message[0].upper() + message[1:] + ".", headers=headers)

    @app.errorhandler(errors.MovrError)
    def domain_error(error: errors.MovrError) -> Any:
        if error.status >= 500:
            log.warning("%s: %s", error.code, error)  # the cause goes to the log, not to the user
        if is_api_request():
            return error_json(error.code, friendly(error), error.status)
        return error_page(error.status, friendly(error))

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        message = "This form has expired or did not come from MovR. Please go back, reload and try again."
        if is_api_request():
            return error_json("csrf_failed", message, 403)
        return error_page(400, message, title="Please try again")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        log.exception("unexpected error on %s %s", request.method, request.path)
        if is_api_request():
            return error_json("internal_error", HTTP_MESSAGES[500], 500)
        return error_page(500, "Something went wrong on our side. It has been logged; please try again.")
