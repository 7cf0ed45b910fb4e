"""Stop Twisted parsing POST bodies into `request.args` in daphne, which never reads them."""

from __future__ import annotations

import functools
import inspect


def skip_form_parsing() -> bool:
    """Make daphne's requests skip Twisted's form parsing; return whether it applies.

    Twisted's `Request` parses the body of every POST that has a Content-Type: it runs the
    header through the `email` package (about 70 µs, even for `application/json`), decodes
    urlencoded bodies, and reads whole multipart bodies (uploads of up to 15 MiB) into
    `request.args`. Daphne hands the raw body to the ASGI app and never looks at `args`, so all
    of it is wasted: profiled, it was a sixth of the web process's CPU per webhook delivery.
    Twisted has a switch for it (`parsePOSTFormSubmission`, Twisted >= 24.10); daphne does not
    pass it, so its request class gets it here.
    """
    try:
        from daphne.http_protocol import WebRequest
        from twisted.web.http import Request
    except ImportError:
        return False
    if "parsePOSTFormSubmission" not in inspect.signature(Request.__init__).parameters:
        return False
    if getattr(WebRequest.__init__, "skips_form_parsing", False):
        return True
    original = WebRequest.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        original(self, *args, **kwargs)

    __init__.skips_form_parsing = True
    WebRequest.__init__ = __init__
    return True
