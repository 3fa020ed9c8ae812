"""`GET /lab/`: the console's page, rendered from the frontend's `static/index.html` with what a page needs
before any script runs (the lab's token, its regions, the app's URL); and where its static files come from.

The page names every region of the preset in its HTML, so it says what the lab is even without JavaScript.
The console can break the lab, so the page opens only with the lab's token, the way a notebook server's
does: `movr lab up` and `movr demo` print `<balancer>/lab/?token=…`; that request sets an HttpOnly,
SameSite=Strict cookie and redirects to `/lab/`, so the token leaves the address bar. Without the token or
the cookie the page still names the lab's regions, locked: no token in it, no controls. With it, the token
goes in a <meta> tag for the page's own scripts (same origin; a page of another site cannot read it).
The app's vendored Bootstrap (flask_bootstrap's files) and its stylesheet are served as they are: the same
files, not copies.
"""

from __future__ import annotations

import functools
import html
import importlib.util
from pathlib import Path

from movr.lab.state import LabState

STATIC_DIR = Path(__file__).parent / "static"
MOVR_STATIC_DIR = Path(__file__).parents[2] / "web" / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_FALLBACK = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="movr-lab-token" content="__MOVR_LAB_TOKEN__">
<title>__MOVR_LAB_TITLE__</title></head>
<body><h1>__MOVR_LAB_TITLE__</h1>
<p>The console's page is not installed; the lab's regions:</p>
<ul>__MOVR_LAB_REGIONS__</ul>
<p>The app: <a href="__MOVR_LAB_APP_URL__">__MOVR_LAB_APP_URL__</a></p>
</body></html>
"""


def bootstrap_dir() -> Path | None:
    """flask_bootstrap's Bootstrap 5 files (found without importing the package, which imports Flask)."""
    spec = importlib.util.find_spec("flask_bootstrap")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "static" / "bootstrap5"
    return found if found.is_dir() else None


def title(state: LabState) -> str:
    goal = f", survival {state.plan.survival.goal}" if state.plan.survival is not None else ""
    return f"MovR lab console — {state.topology} on {state.preset.name}{goal}"


def regions_html(state: LabState) -> str:
    items = []
    for name in state.preset.region_names:
        primary = " <small>(primary)</small>" if name == state.preset.primary_region else ""
        escaped = html.escape(name)
        items.append(f'<li class="lab-region" data-region="{escaped}">{escaped}{primary}</li>')
    return "".join(items)


COOKIE = "movr_lab_console"
_ALERT = 'id="console-alert" class="alert alert-danger d-none" role="alert" data-testid="console-alert"></div>'
_LOCKED = (
    'id="console-alert" class="alert alert-warning" role="alert" data-testid="console-locked">'
    "<strong>This console is locked.</strong> It can break the lab, so it opens only with the lab's token: open "
    "the console URL that <code>movr lab up</code> or <code>movr demo</code> printed (it ends in "
    "<code>?token=…</code>), or run <code>movr lab status</code> to see it again.</div>"
)


def console_url(state: LabState) -> str:
    """The URL that opens the console: the lab's token in the query, once (it becomes a cookie of the page)."""
    return f"{state.balancer_url}/lab/?token={state.control_token}"


@functools.cache
def _template() -> str:
    """The page's template, read once: package data does not change while the balancer runs."""
    template_path = STATIC_DIR / "index.html"
    return template_path.read_text() if template_path.is_file() else _FALLBACK


def render(state: LabState, token: str) -> str:
    """The page; `token` "" renders it locked (what the lab is, no controls: see `console_url`)."""
    template = _template()
    if not token:
        template = template.replace(_ALERT, _LOCKED)
    values = {
        "__MOVR_LAB_TOKEN__": html.escape(token),
        "__MOVR_LAB_TITLE__": html.escape(title(state)),
        "__MOVR_LAB_APP_URL__": html.escape(state.balancer_url or ""),
        "__MOVR_LAB_REGIONS__": regions_html(state),  # escaped item by item
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template
