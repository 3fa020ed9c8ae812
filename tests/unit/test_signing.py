"""Signed tokens and cookies checked once per token or key (movr.web.signing), and still exactly as strict."""

from __future__ import annotations

from flask import Flask

from movr.web import signing

SALT = "test-salt"


def test_a_remembered_token_still_expires_by_its_age_and_other_keys_or_changes_are_refused(monkeypatch):
    token = signing.sign("key-one", SALT, ["rome", 1])
    assert signing.verified("key-one", SALT, token, 60) == ("rome", 1)
    assert signing.verified("key-one", SALT, token, 60) == ("rome", 1)  # remembered: the same answer

    now = signing.time.time()
    monkeypatch.setattr(signing.time, "time", lambda: now + 61)
    assert signing.verified("key-one", SALT, token, 60) is None  # remembered, and still expired by age
    monkeypatch.setattr(signing.time, "time", lambda: now - 5)
    assert signing.verified("key-one", SALT, token, 60) is None  # signed in the future: refused, as itsdangerous does
    monkeypatch.undo()

    assert signing.verified("key-two", SALT, token, 60) is None
    assert signing.verified("key-one", "other-salt", token, 60) is None
    assert signing.verified("key-one", SALT, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), 60) is None
    assert signing.verified("key-one", SALT, "not a token", 60) is None


def test_the_session_serializer_is_built_once_and_again_when_the_keys_change():
    app = Flask(__name__)
    app.secret_key = "first"
    interface = signing.SessionInterface()
    first = interface.get_signing_serializer(app)
    assert first is interface.get_signing_serializer(app)
    cookie = first.dumps({"user": "ada"})

    app.secret_key = "second"
    app.config["SECRET_KEY_FALLBACKS"] = ["first"]
    second = interface.get_signing_serializer(app)
    assert second is not first
    assert second.loads(cookie) == {"user": "ada"}  # signed with a fallback key: still read

    app.config["SECRET_KEY_FALLBACKS"] = []
    assert interface.get_signing_serializer(app).loads(second.dumps({"n": 1})) == {"n": 1}

    app.secret_key = None
    assert interface.get_signing_serializer(app) is None  # no key, no sessions (as Flask's own)
