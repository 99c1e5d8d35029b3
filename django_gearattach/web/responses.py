"""An offloaded view's response as a job result, and the same response served again.

The worker keeps what the view made: its status, its headers, the cookies it set, and
its body. The stored result is ``{"status", "content_type", ...}`` with one of:

* ``"html"``: an HTML body (text);
* ``"body"``: another text body (JSON, plain text, XML) of at most
  :data:`INLINE_LIMIT` bytes, served inline as the view sent it;
* ``"redirect"``: the Location of a 3xx response;
* ``"download"``: ``{"path", "name", "size", "inline"}``, a body saved to default
  storage (binary, large, or sent as an attachment).

beside ``"headers"`` (``[[name, value], ...]``, without the ones rebuilt on serving)
and ``"cookies"`` (each cookie's name, value and attributes, exactly as set: a signed
cookie stays signed with ``SECRET_KEY``).

Unless the view is shared, everything but the status, the content type and a
download's file is sealed (``{"status", "content_type", "sealed"}``): a user's page,
Location, headers and cookies hold their data and CSRF tokens. Cookies are sealed even
for a shared view (``"sealed_cookies"``): a cookie value is nobody's to read in the
record or the admin. :func:`open_response` reads every form.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import FileResponse as DjangoFileResponse
from django.http import HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.utils.cache import add_never_cache_headers

from ..exceptions import BadPayload
from ..payload import new_key
from ..sealing import seal, unseal
from .files import FileResponse

logger = logging.getLogger("django_gearattach")

DOWNLOAD_DIR = "gearattach/downloads"
#: Text bodies up to this size are kept in the record; larger ones go to storage.
INLINE_LIMIT = 1024 * 1024
#: Headers never stored: rebuilt when the response is served, or meaningless after.
UNSTORED_HEADERS = frozenset(
    {
        "content-length",
        "content-type",
        "location",
        "set-cookie",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "date",
        "server",
    }
)
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


def stored_response(
    status: int, content_type: str, body: dict[str, Any], *, private: bool
) -> dict[str, Any]:
    """A view's response as a job result: ``body`` (its HTML, Location, headers...) sealed
    when ``private``, beside its status and content type; its cookies always sealed."""
    result: dict[str, Any] = {"status": status}
    if content_type:
        result["content_type"] = content_type
    if private:
        result["sealed"] = seal(body)
        return result
    cookies = body.get("cookies")
    result.update({k: v for k, v in body.items() if k != "cookies"})
    if cookies:
        result["sealed_cookies"] = seal(cookies)
    return result


def open_response(result: Any) -> dict[str, Any] | None:
    """A stored response with its sealed parts opened; None when ``result`` is not one.

    A part that no key opens any more (``SECRET_KEY`` rotated without a fallback) is
    left out, and the response is served as a plain "complete".
    """
    if not isinstance(result, dict):
        return None
    opened = {k: v for k, v in result.items() if k not in ("sealed", "sealed_cookies")}
    for part in ("sealed", "sealed_cookies"):
        if part not in result:
            continue
        try:
            value = unseal(result[part])
        except BadPayload as exc:
            logger.warning("a stored offload response cannot be opened: %s", exc)
            continue
        if part == "sealed" and isinstance(value, dict):
            opened.update(value)
        elif part == "sealed_cookies" and isinstance(value, list):
            opened["cookies"] = value
    return opened


# -- the worker side: the response as the job's result ------------------------------------
def _is_text(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media.startswith(TEXT_TYPES) or media.endswith(("+json", "+xml"))


def _headers(response: HttpResponseBase) -> list[list[str]]:
    return [
        [name, value]
        for name, value in response.headers.items()
        if name.lower() not in UNSTORED_HEADERS
    ]


def _cookies(response: HttpResponseBase) -> list[dict[str, Any]]:
    return [
        {"name": name, "value": morsel.value, **{k: v for k, v in morsel.items() if v}}
        for name, morsel in response.cookies.items()
    ]


def response_to_result(response: HttpResponseBase, *, private: bool) -> dict[str, Any]:
    """The view's response as the job's result (see the module docstring).

    A ``private`` response (any view not ``shared``) keeps its body, Location, headers
    and cookies sealed. A download's body goes to default storage under a random path.
    """
    status = response.status_code
    parts: dict[str, Any] = {}
    if headers := _headers(response):
        parts["headers"] = headers
    if cookies := _cookies(response):
        parts["cookies"] = cookies
    location = response.get("Location")
    if location and 300 <= status < 400:
        return stored_response(status, "", {"redirect": location, **parts}, private=private)
    content_type = response.get("Content-Type", "")
    body: bytes = (
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
        if response.streaming
        else response.content  # type: ignore[attr-defined]
    )
    disposition = response.get("Content-Disposition", "")
    attachment = disposition.lower().startswith("attachment") or isinstance(
        response, DjangoFileResponse
    )
    if not attachment and _is_text(content_type) and len(body) <= INLINE_LIMIT:
        text = body.decode(response.charset or "utf-8", "replace")
        name = "html" if content_type.lower().startswith("text/html") else "body"
        return stored_response(status, content_type, {name: text, **parts}, private=private)
    name = _filename(disposition, content_type)
    path = default_storage.save(f"{DOWNLOAD_DIR}/{new_key()}/{name}", ContentFile(body))
    download = {"path": path, "name": name, "size": len(body), "inline": not attachment}
    # The file's path is random and the file is served to its owner only: not sealed.
    result = stored_response(status, content_type, parts, private=private)
    result["download"] = download
    return result


def _filename(disposition: str, content_type: str) -> str:
    found = re.search(r'filename\s*=\s*"?([^";]+)"?', disposition)
    name = found.group(1).strip() if found else ""
    name = name.replace("/", "_").replace("\\", "_").lstrip(".")
    if name:
        return name
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return f"response{extension}"


# -- the web side: the stored response served again ---------------------------------------
def replay(result: dict[str, Any]) -> HttpResponseBase | None:
    """The response a finished offloaded view made, from its opened result; None when the
    result holds no page (say, a key rotated away) or its file is gone.

    Its status, headers and cookies are the view's. Two things are not: a permanent
    redirect becomes temporary (a rerun may replace the stored outcome), and the
    response is never cached by anyone (``Cache-Control: private, no-store``), since
    the URL that serves it carries a user's token.
    """
    status = int(result.get("status", 200))
    content_type = result.get("content_type") or "text/html; charset=utf-8"
    response: HttpResponseBase
    if isinstance(result.get("redirect"), str):
        response = HttpResponseRedirect(result["redirect"])
        response.status_code = {301: 302, 308: 307}.get(status, status)
    elif isinstance(result.get("html"), str) or isinstance(result.get("body"), str):
        text = result.get("html") if isinstance(result.get("html"), str) else result["body"]
        response = HttpResponse(text, status=status, content_type=content_type)
    elif isinstance(result.get("download"), dict):
        stored = result["download"]
        try:
            handle = default_storage.open(stored["path"], "rb")
        except (FileNotFoundError, KeyError):
            return None
        response = FileResponse(
            handle,
            as_attachment=not stored.get("inline"),
            filename=stored.get("name") or "",
            content_type=content_type,
            status=status,
        )
    else:
        return None
    download = isinstance(result.get("download"), dict)
    for name, value in result.get("headers") or []:
        if not (isinstance(name, str) and isinstance(value, str)):
            continue
        if name.lower() in ("cache-control", "expires") or (
            download and name.lower() == "content-disposition"
        ):
            continue  # never cached; a file's name is FileResponse's to write
        response[name] = value
    for cookie in result.get("cookies") or []:
        if isinstance(cookie, dict) and isinstance(cookie.get("name"), str):
            response.cookies[cookie["name"]] = str(cookie.get("value", ""))
            morsel = response.cookies[cookie["name"]]
            for attribute, value in cookie.items():
                if attribute not in ("name", "value") and attribute in morsel:
                    morsel[attribute] = value
    add_never_cache_headers(response)
    return response
