"""The pages' forms (Flask-WTF: every form carries the session's CSRF token).

Limits mirror `movr.domain.rules`, so a bad value is refused here with a message next to its field, before
any action runs; the actions check again (they are the authority, and the API reaches them too).
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError

from movr.domain import rules
from movr.domain.models import VEHICLE_TYPES

try:  # wtforms >= 3.3 names choices (and groups them); tuples are deprecated there
    from wtforms import SelectChoice
except ImportError:  # pragma: no cover - older wtforms
    SelectChoice = None


def choice(value: str, label: str, group: str | None = None) -> object:
    if SelectChoice is None:  # pragma: no cover
        return (value, label)
    return SelectChoice(value, label, optgroup=group)


def printable(_form: FlaskForm, field: StringField) -> None:
    """No control characters (they are never part of a name, and some cannot be stored)."""
    if field.data and any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in field.data):
        raise ValidationError("Only printable characters, please.")


USERNAME = [
    DataRequired(),
    Length(min=3, max=32),
    Regexp(rules.USERNAME_RE, message="Letters, digits, '.', '_' or '-' only."),
]


class SignupForm(FlaskForm):
    username = StringField("Username", validators=USERNAME, render_kw={"autocomplete": "username"})
    password = PasswordField(
        "Password",
        validators=[DataRequired(), Length(min=rules.MIN_PASSWORD, max=rules.MAX_PASSWORD)],
        render_kw={"autocomplete": "new-password"},
    )
    first_name = StringField("First name", validators=[Optional(), Length(max=rules.MAX_NAME), printable])
    last_name = StringField("Last name", validators=[Optional(), Length(max=rules.MAX_NAME), printable])
    # The domain's own pattern, not WTForms' Email(), which needs the email_validator package.
    email = EmailField(
        "Email",
        validators=[
            Optional(),
            Length(max=254),
            Regexp(rules.EMAIL_RE, message="That email address does not look right."),
        ],
    )
    city = SelectField("Home city", validators=[DataRequired()])
    submit = SubmitField("Sign up")


class LoginForm(FlaskForm):
    username = StringField("Username", validators=USERNAME, render_kw={"autocomplete": "username"})
    password = PasswordField(
        "Password",
        validators=[DataRequired(), Length(max=rules.MAX_PASSWORD)],
        render_kw={"autocomplete": "current-password"},
    )
    submit = SubmitField("Log in")


class VehicleForm(FlaskForm):
    type = SelectField("Type", choices=[choice(t, t.capitalize()) for t in VEHICLE_TYPES], validators=[DataRequired()])
    brand = StringField("Brand", validators=[Optional(), Length(max=rules.MAX_NAME), printable])
    color = StringField("Color", validators=[Optional(), Length(max=32), printable])
    location = StringField("Where is it?", validators=[Optional(), Length(max=rules.MAX_LOCATION), printable])
    submit = SubmitField("Add vehicle")


class EndRideForm(FlaskForm):
    location = StringField(
        "Where did you leave it?", validators=[Optional(), Length(max=rules.MAX_LOCATION), printable]
    )
    submit = SubmitField("End ride")


class PromoCodeForm(FlaskForm):
    code = StringField("Promo code", validators=[DataRequired(), Length(max=32), printable])
    submit = SubmitField("Apply")
