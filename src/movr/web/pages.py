"""HTML pages: each handler validates, calls one action (the profile two), and renders.

A refused action answers with its domain status (403, 404, 409, 422...) and a page that says why, so
that a refusal is never a 2xx/3xx; a success redirects (303) to the page that shows its result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from movr.domain import errors
from movr.store import actions
from movr.web import current, location
from movr.web.auth import Rider, login_limit, session_lifetime
from movr.web.errors import error_page, friendly
from movr.web.forms import EndRideForm, LoginForm, PromoCodeForm, SignupForm, VehicleForm, choice
from movr.web.telemetry import client_location

pages = Blueprint("pages", __name__)

COOKIE_MAX_AGE = 365 * 24 * 3600


# --- helpers -----------------------------------------------------------------------------------------


def rider() -> Rider:
    return current_user._get_current_object()


def safe_next(target: str | None, default: str) -> str:
    """Only local paths: a `next` parameter must never send the user to another site."""
    if not target or len(target) > 512:
        return default
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in target):  # e.g. CR/LF: no header injection
        return default
    parts = urlsplit(target)
    return default if parts.scheme or parts.netloc else target


def refused(error: errors.MovrError, back: str, back_label: str) -> Response:
    """A domain error from a button: its status, a friendly sentence and a way back."""
    return error_page(error.status, friendly(error), back=back, back_label=back_label)


def form_page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(template, **context), status


def attempt(action: Callable[[], Any]) -> tuple[Any, errors.MovrError | None]:
    """Run an action; a domain error is a result to show, not an exception to propagate."""
    try:
        return action(), None
    except errors.MovrError as error:
        if error.status >= 500 or isinstance(error, errors.SessionEnded):
            raise  # unavailable database: the error page says so, with its 503; an ended session: log in
        return None, error


def default_city() -> str:
    """The city a visitor most likely cares about: where they are, else MovR's first city here."""
    where = client_location().city
    if where:
        return where
    own = current.preset().regions[current.region()].cities
    return own[0]


# --- home, browsing location -------------------------------------------------------------------------


@pages.get("/")
def index() -> str:
    return render_template("index.html")


@pages.post("/browsing-from")
def browsing_from() -> Response:
    """The navigation's "browsing from" selector: remembered in the cookie the lab balancer reads."""
    back = safe_next(request.form.get("next"), url_for("pages.index"))
    choice = request.form.get("city", "")
    response = redirect(back, code=303)
    secure = current_app.config["MOVR_SECURE_COOKIES"]
    if not choice:
        response.delete_cookie(location.CITY_COOKIE, httponly=True, samesite="Lax", secure=secure)
        flash("Your location now comes from your home city.", "info")
        return response
    city = location.match_city(current.preset(), choice)
    if city is None:
        return error_page(422, "Pick one of MovR's cities.")
    response.set_cookie(
        location.CITY_COOKIE,
        location.cookie_value(city),
        max_age=COOKIE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    flash(f"You are now browsing from {location.display(city)}.", "info")
    return response


# --- sign up, log in, log out ------------------------------------------------------------------------


def signup_form() -> SignupForm:
    form = SignupForm()
    preset = current.preset()
    form.city.choices = [choice(c, location.display(c), preset.region_of(c)) for c in preset.cities]
    return form


def throttled(template: str, form: Any, retry_after: int, **context: Any) -> tuple[str, int, dict[str, str]]:
    """The form again, with why it was refused: too many tries from this address (movr.web.throttle)."""
    problem = f"Too many attempts from your address. Please wait {retry_after} seconds and try again."
    return render_template(template, form=form, problem=problem, **context), 429, {"Retry-After": str(retry_after)}


@pages.route("/signup", methods=["GET", "POST"])
def signup() -> Any:
    form = signup_form()
    if request.method == "GET":
        form.city.data = default_city()
        return render_template("signup.html", form=form)
    if not form.validate_on_submit():
        return form_page("signup.html", 422, form=form)
    user, error = attempt(
        lambda: actions.register(
            current.backend(),
            city=form.city.data,
            username=form.username.data,
            password=form.password.data,
            first_name=form.first_name.data or "",
            last_name=form.last_name.data or "",
            email=form.email.data or "",
        )
    )
    if error:
        return form_page("signup.html", error.status, form=form, problem=friendly(error))
    flash(f"Welcome to MovR, {user.username}! Log in to start riding in {location.display(user.city)}.", "success")
    return redirect(url_for("pages.login", username=user.username), code=303)


@pages.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if request.method == "GET":
        form.username.data = (request.args.get("username") or "")[:32]
        return render_template("login.html", form=form, next=request.args.get("next", ""))
    if not form.validate_on_submit():
        return form_page("login.html", 422, form=form, next=request.form.get("next", ""))
    user, error = attempt(
        lambda: actions.authenticate(
            current.backend(), username=form.username.data, password=form.password.data, limit=login_limit()
        )
    )
    if error:
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, errors.TooManyAttempts) else {}
        page = render_template("login.html", form=form, problem=friendly(error), next=request.form.get("next"))
        return page, error.status, headers
    login_user(Rider.logged_in(user))
    flash(f"Welcome back, {user.username}.", "success")
    home = url_for("pages.vehicles", city=user.city)
    return redirect(safe_next(request.form.get("next"), home), code=303)


@pages.post("/logout")
def logout() -> Response:
    """Log out: this session ends in the database too, so a copy of its cookie is refused from now on."""
    ended = True
    if current_user.is_authenticated:
        try:
            actions.end_session(current.backend(), session=rider().session, lifetime_s=session_lifetime())
        except errors.StoreUnavailable:  # this browser forgets the session all the same
            ended = False
    logout_user()
    if ended:
        flash("You are logged out. See you soon!", "info")
    else:
        flash(
            "You are logged out in this browser, but your home region is unreachable: a copy of this session "
            "elsewhere stays valid until you log out everywhere once it is back.",
            "warning",
        )
    return redirect(url_for("pages.index"), code=303)


@pages.post("/profile/logout-everywhere")
@login_required
def logout_everywhere() -> Response:
    """End every session and API token of this user, this one included."""
    actions.end_all_sessions(current.backend(), session=rider().session)
    logout_user()
    flash("You are logged out everywhere: every session and API token of yours has ended.", "info")
    return redirect(url_for("pages.login"), code=303)


# --- vehicles ----------------------------------------------------------------------------------------


@pages.get("/vehicles")
def vehicles_here() -> Response:
    return redirect(url_for("pages.vehicles", city=default_city()))


@pages.get("/cities/<city>/vehicles")
def vehicles(city: str) -> str:
    city = current.known_city(city)
    found = actions.list_vehicles(current.backend(), city=city)
    return render_template("vehicles.html", city=city, vehicles=found)


@pages.route("/vehicles/new", methods=["GET", "POST"])
@login_required
def add_vehicle() -> Any:
    form = VehicleForm()
    if request.method == "GET":
        return render_template("add_vehicle.html", form=form)
    if not form.validate_on_submit():
        return form_page("add_vehicle.html", 422, form=form)
    me = rider()
    vehicle, error = attempt(
        lambda: actions.add_vehicle(
            current.backend(),
            city=me.city,  # only in your home city: the city is not a choice
            owner_id=me.id,
            type=form.type.data,
            brand=form.brand.data or "",
            color=form.color.data or "",
            location=form.location.data or "",
            session=me.session,
        )
    )
    if error:
        return form_page("add_vehicle.html", error.status, form=form, problem=friendly(error))
    flash(f"Your {vehicle.type} is listed in {location.display(vehicle.city)}.", "success")
    return redirect(url_for("pages.vehicles", city=me.city), code=303)


@pages.post("/vehicles/<city>/<vehicle_id>/remove")
@login_required
def remove_vehicle(city: str, vehicle_id: str) -> Response:
    city = current.known_city(city)
    _, error = attempt(
        lambda: actions.remove_vehicle(
            current.backend(), city=city, vehicle_id=vehicle_id, owner_id=rider().id, session=rider().session
        )
    )
    if error:
        return refused(error, url_for("pages.profile"), "Back to my profile")
    flash("Your vehicle is removed.", "success")
    return redirect(url_for("pages.profile"), code=303)


# --- rides -------------------------------------------------------------------------------------------


@pages.post("/rides")
@login_required
def start_ride() -> Response:
    me = rider()
    city = request.form.get("city", "")[:64]
    back = url_for("pages.vehicles", city=city) if current.preset().is_city(city) else url_for("pages.index")
    ride, error = attempt(
        lambda: actions.start_ride(
            current.backend(),
            city=city,
            rider_id=me.id,
            rider_city=me.city,
            vehicle_id=request.form.get("vehicle_id", "")[:64],
            session=me.session,
        )
    )
    if error:
        return refused(error, back, "Back to the vehicles")
    flash(f"Your ride has started at {ride.start_location or 'the vehicle'}. Enjoy!", "success")
    return redirect(url_for("pages.rides"), code=303)


@pages.get("/rides")
@login_required
def rides() -> str:
    me = rider()
    found = actions.list_rides(current.backend(), city=me.city, rider_id=me.id, session=me.session)
    return render_template("rides.html", rides=found, end_form=EndRideForm(), promo_form=PromoCodeForm())


@pages.post("/rides/<city>/<ride_id>/end")
@login_required
def end_ride(city: str, ride_id: str) -> Any:
    city = current.known_city(city)
    form = EndRideForm()
    if not form.validate_on_submit():
        return refused(errors.InvalidInput(_first_form_error(form)), url_for("pages.rides"), "Back to my rides")
    ride, error = attempt(
        lambda: actions.end_ride(
            current.backend(),
            city=city,
            ride_id=ride_id,
            rider_id=rider().id,
            location=form.location.data or None,
            session=rider().session,
        )
    )
    if error:
        return refused(error, url_for("pages.rides"), "Back to my rides")
    flash(f"Ride ended after {ride.length_text}. Thanks for riding MovR!", "success")
    return redirect(url_for("pages.rides"), code=303)


@pages.post("/rides/<city>/<ride_id>/promo-code")
@login_required
def apply_promo_code(city: str, ride_id: str) -> Any:
    city = current.known_city(city)
    form = PromoCodeForm()
    if not form.validate_on_submit():
        return refused(errors.InvalidInput(_first_form_error(form)), url_for("pages.rides"), "Back to my rides")
    ride, error = attempt(
        lambda: actions.apply_promo_code(
            current.backend(),
            city=city,
            ride_id=ride_id,
            rider_id=rider().id,
            code=form.code.data,
            session=rider().session,
        )
    )
    if error:
        return refused(error, url_for("pages.rides"), "Back to my rides")
    flash(f"Promo code {ride.promo_code} applied to your ride.", "success")
    return redirect(url_for("pages.rides"), code=303)


def _first_form_error(form: Any) -> str:
    for name, messages in form.errors.items():
        if messages:
            return f"{getattr(form, name).label.text}: {messages[0]}" if hasattr(form, name) else messages[0]
    return "the form is not valid"


# --- profile and users -------------------------------------------------------------------------------


@pages.get("/profile")
@login_required
def profile() -> str:
    me = rider()
    store = current.backend()
    owned = actions.list_user_vehicles(store, city=me.city, owner_id=me.id, session=me.session)
    rides = actions.list_rides(store, city=me.city, rider_id=me.id, session=me.session)
    open_rides = [ride for ride in rides if ride.is_open]
    return render_template("profile.html", vehicles=owned, open_rides=open_rides)


@pages.post("/profile/remove")
@login_required
def remove_account() -> Any:
    me = rider()
    if request.form.get("confirm", "")[:64] != me.username:
        return refused(
            errors.InvalidInput("type your username to confirm that your account should go"),
            url_for("pages.profile"),
            "Back to my profile",
        )
    _, error = attempt(
        lambda: actions.remove_user(
            current.backend(), city=me.city, user_id=me.id, username=me.username, session=me.session
        )
    )
    if error:
        return refused(error, url_for("pages.profile"), "Back to my profile")
    logout_user()
    flash("Your account, your vehicles and your rides are removed. Goodbye!", "info")
    return redirect(url_for("pages.index"), code=303)


@pages.get("/users")
def users_here() -> Response:
    return redirect(url_for("pages.users", city=default_city()))


@pages.get("/cities/<city>/users")
def users(city: str) -> str:
    city = current.known_city(city)
    found = actions.list_users(current.backend(), city=city)
    return render_template("users.html", city=city, users=found)


# Over the per-address budget (movr.web.throttle): the form again, with why.
THROTTLED_PAGES = {
    "pages.login": lambda retry_after: throttled(
        "login.html", LoginForm(), retry_after, next=request.form.get("next", "")
    ),
    "pages.signup": lambda retry_after: throttled("signup.html", signup_form(), retry_after),
}
