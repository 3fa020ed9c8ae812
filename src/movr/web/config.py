"""The app's settings: environment variables first, then the `config` mapping given to `create_app`.

Every setting has a `MOVR_*` name so that one set of environment variables configures the app, the
backend (`movr.store.factory.backend_from_env`) and `movr serve` alike.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

log = logging.getLogger("movr.web")

# (environment variable, default, meaning) — the README table is generated from the same facts.
SETTINGS: tuple[tuple[str, str | None, str], ...] = (
    ("MOVR_DATABASE_URL", None, "database: `postgresql://...` (one server) or `cockroachdb://...`"),
    ("MOVR_REGION_DATABASE_URLS", None, "lab only: JSON object region -> PostgreSQL URL (overrides the URL)"),
    ("MOVR_REGION", None, "the region this app server runs in (default: the preset's primary region)"),
    ("MOVR_PRESET", "gcp-3", "preset name or TOML file: regions, cities, latencies"),
    ("MOVR_SECRET_KEY", None, "signs sessions, CSRF and API tokens; unset: random per process (warning)"),
    ("MOVR_SECURE_COOKIES", "0", "1: cookies only over HTTPS (set it behind TLS)"),
    ("MOVR_LOGIN_RATE_LIMIT", "10/minute", "log-in attempts per client address, pages and API together (per worker)"),
    ("MOVR_SIGNUP_RATE_LIMIT", "10/minute", "sign-ups per client address, pages and API together (per worker)"),
    ("MOVR_LOGIN_USER_LIMIT", "10/15 minutes", "failed log-ins per username, in every region and worker; then 429"),
    ("MOVR_TOKEN_MAX_AGE", "86400", "seconds an API bearer token stays valid"),
    ("MOVR_PROXY_HOPS", "0", "trusted proxies in front (X-Forwarded-For/-Proto), e.g. 1 behind the lab balancer"),
    ("MOVR_DATABASE_WAN", "0", "1: every database round trip counts as a WAN round trip (hybrid topology)"),
    ("MOVR_FOLLOWER_READS", "0", "CockroachDB only: read-only actions use follower reads"),
)

TRUE = ("1", "true", "yes", "on")


def flag(value: Any) -> bool:
    return str(value).strip().lower() in TRUE


def load_config(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flask config for the app: defaults, then `MOVR_*` environment variables, then `overrides`."""
    env = os.environ if env is None else env
    config: dict[str, Any] = {name: env.get(name, default) for name, default, _ in SETTINGS}
    config.update({k: v for k, v in (overrides or {}).items()})

    secret = config.get("SECRET_KEY") or config.get("MOVR_SECRET_KEY")
    if not secret:
        # Never a hard-coded secret: a random key is safe, only sessions do not survive a restart and
        # workers of one server do not share them — which is why `movr serve` warns too.
        log.warning("MOVR_SECRET_KEY is not set: using a random key (sessions end when this process does)")
        secret = secrets.token_urlsafe(32)
    secure = flag(config.get("MOVR_SECURE_COOKIES", "0"))
    config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="movr_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=timedelta(days=7),
        # Bodies larger than this are refused (413) before any parsing: no form or JSON needs more.
        MAX_CONTENT_LENGTH=int(config.get("MAX_CONTENT_LENGTH", 64 * 1024)),
        BOOTSTRAP_SERVE_LOCAL=True,
        RATELIMIT_STORAGE_URI="memory://",
        MOVR_TOKEN_MAX_AGE=int(config.get("MOVR_TOKEN_MAX_AGE") or 86400),
        MOVR_PROXY_HOPS=int(config.get("MOVR_PROXY_HOPS") or 0),
        MOVR_SECURE_COOKIES=secure,
    )
    config.setdefault("RATELIMIT_ENABLED", True)
    # A form stays valid for a working day (Flask-WTF's default hour is short for a demo left open).
    config.setdefault("WTF_CSRF_TIME_LIMIT", 8 * 3600)
    return config


def backend_env(config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `backend_from_env` should see: the process env with the app's MOVR_* settings on top."""
    merged = dict(os.environ if env is None else env)
    for name, _default, _ in SETTINGS:
        value = config.get(name)
        if value is not None:
            merged[name] = str(value)
    return merged
