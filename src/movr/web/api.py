"""The JSON API under /api/v1: one endpoint per user action, each calling that one action.

Auth: `Authorization: Bearer <token>` (from `POST /api/v1/sessions`) or the session cookie; writes with
the cookie must send `X-CSRFToken` (see `movr.web.auth`). Errors: `{"error": {"code", "message"}}`.
The OpenAPI document at /api/v1/openapi.json is generated from these declarations; every status an
endpoint can answer is listed with its schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from apiflask import APIBlueprint, Schema
from flask import current_app
from flask_login import login_user, logout_user

from movr.domain import errors
from movr.store import actions
from movr.web import current
from movr.web.auth import Rider, api_rider, csrf_token, issue_token, login_limit, presented_riders, session_lifetime
from movr.web.schemas import (
    CityOut,
    IdempotencyHeaders,
    LogInIn,
    PromoCodeIn,
    PromoCodeOut,
    RideEndIn,
    RideIn,
    RideOut,
    SessionOut,
    SignUpIn,
    UserOut,
    UserPublicOut,
    VehicleIn,
    VehicleOut,
    VehiclesQuery,
)

api = APIBlueprint("api", __name__, url_prefix="/api/v1", tag="MovR")

AUTH = [{"BearerAuth": []}, {"SessionCookie": []}]
STATUS_TEXT = {
    400: "Malformed request body, or a malformed Idempotency-Key",
    401: "Not signed in, or the token is not valid, has expired or its session has ended",
    403: "Not yours, or a cookie-authenticated write without X-CSRFToken",
    404: "No such city, user, vehicle, ride or promo code",
    409: "Conflict with the current state (taken, in use, wrong city, already ended...)",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many attempts from this address, or failed log-ins for this username (see Retry-After)",
    503: "The database for that region is not reachable",
}
BODY = (400, 413, 422)  # what any endpoint with a JSON body can answer
View = TypeVar("View", bound=Callable[..., Any])


def responses(*statuses: int) -> dict[int, str]:
    return {status: STATUS_TEXT[status] for status in sorted(set(statuses))}


def creates(body: type[Schema], created: type[Schema], description: str) -> Callable[[View], View]:
    """A write that creates something: its JSON `body`, the `headers` with its Idempotency-Key (a retry
    with the same key gets the first answer), and a 201 with what it `created`."""

    def declare(view: View) -> View:
        view = api.output(created, status_code=201, description=description)(view)
        view = api.input(IdempotencyHeaders, location="headers", arg_name="headers")(view)
        return api.input(body, arg_name="body")(view)

    return declare


# --- users and sessions ------------------------------------------------------------------------------


@api.post("/users")
@creates(SignUpIn, UserOut, "The new user")
@api.doc(summary="Sign up", responses=responses(*BODY, 409, 429, 503))
def create_user(body: dict[str, Any], headers: dict[str, Any]) -> Any:
    return actions.register(current.backend(), **body, idempotency_key=headers.get("idempotency_key"))


@api.post("/sessions")
@api.input(LogInIn, arg_name="body")
@api.output(SessionOut, status_code=201, description="A bearer token; the session cookie is set too")
@api.doc(summary="Log in", responses=responses(*BODY, 401, 429, 503))
def create_session(body: dict[str, Any]) -> Any:
    user = actions.authenticate(
        current.backend(), username=body["username"], password=body["password"], limit=login_limit()
    )
    rider = Rider.logged_in(user)  # the cookie's session and the token are one session: log-out ends both
    login_user(rider)
    return {
        "token": issue_token(rider),
        "token_type": "Bearer",
        "expires_in": current_app.config["MOVR_TOKEN_MAX_AGE"],
        "csrf_token": csrf_token(),
        "user": user,
    }


@api.delete("/sessions")
@api.output({}, status_code=204, description="Logged out: this session and its bearer token have ended")
@api.doc(summary="Log out", responses=responses(503))
def delete_session() -> Any:
    """Ends the session of the bearer token and of the cookie, whichever the request carries."""
    for rider in presented_riders():
        actions.end_session(current.backend(), session=rider.session, lifetime_s=session_lifetime())
    logout_user()
    return ""


@api.delete("/users/me/sessions")
@api.output({}, status_code=204, description="Every session and bearer token of the user has ended, this one too")
@api.doc(summary="Log out everywhere", security=AUTH, responses=responses(401, 403, 503))
def delete_my_sessions() -> Any:
    rider = api_rider(write=True)
    actions.end_all_sessions(current.backend(), session=rider.session)
    logout_user()
    return ""


@api.get("/users/me")
@api.output(UserOut, description="The signed-in user")
@api.doc(summary="My profile", security=AUTH, responses=responses(401, 404, 503))
def get_me() -> Any:
    rider = api_rider(write=False)
    return actions.get_user(current.backend(), city=rider.city, user_id=rider.id, session=rider.session)


@api.delete("/users/me")
@api.output({}, status_code=204, description="The account, its vehicles and its rides are gone")
@api.doc(summary="Remove my account", security=AUTH, responses=responses(401, 403, 404, 409, 503))
def delete_me() -> Any:
    rider = api_rider(write=True)
    actions.remove_user(
        current.backend(), city=rider.city, user_id=rider.id, username=rider.username, session=rider.session
    )
    logout_user()
    return ""


# --- cities ------------------------------------------------------------------------------------------


@api.get("/cities")
@api.output(CityOut(many=True), description="Every city MovR serves, with the region that homes it")
@api.doc(summary="Cities")
def list_cities() -> Any:
    preset, here = current.preset(), current.region()
    return [{"name": c, "region": preset.region_of(c), "local": preset.region_of(c) == here} for c in preset.cities]


@api.get("/cities/<city>/users")
@api.output(UserPublicOut(many=True), description="Users whose home is the city (no emails)")
@api.doc(summary="Users in a city", responses=responses(404, 503))
def list_city_users(city: str) -> Any:
    return actions.list_users(current.backend(), city=current.known_city(city))


@api.get("/cities/<city>/vehicles")
@api.input(VehiclesQuery, location="query", arg_name="query")
@api.output(VehicleOut(many=True), description="Vehicles in the city, newest first")
@api.doc(summary="Vehicles in a city", responses=responses(404, 422, 503))
def list_city_vehicles(city: str, query: dict[str, Any]) -> Any:
    return actions.list_vehicles(current.backend(), city=current.known_city(city), available_only=not query["all"])


# --- vehicles ----------------------------------------------------------------------------------------


@api.post("/vehicles")
@creates(VehicleIn, VehicleOut, "The vehicle, listed in your home city")
@api.doc(summary="Add a vehicle", security=AUTH, responses=responses(*BODY, 401, 403, 404, 409, 503))
def create_vehicle(body: dict[str, Any], headers: dict[str, Any]) -> Any:
    rider = api_rider(write=True)
    city = body.pop("city", None) or rider.city
    if city != rider.city:
        raise errors.WrongCity("you can add vehicles in your home city only")
    return actions.add_vehicle(
        current.backend(),
        city=city,
        owner_id=rider.id,
        session=rider.session,
        idempotency_key=headers.get("idempotency_key"),
        **body,
    )


@api.delete("/vehicles/<city>/<uuid:vehicle_id>")
@api.output({}, status_code=204, description="The vehicle is removed")
@api.doc(summary="Remove my vehicle", security=AUTH, responses=responses(401, 403, 404, 409, 503))
def delete_vehicle(city: str, vehicle_id: uuid.UUID) -> Any:
    rider = api_rider(write=True)
    actions.remove_vehicle(
        current.backend(),
        city=current.known_city(city),
        vehicle_id=vehicle_id,
        owner_id=rider.id,
        session=rider.session,
    )
    return ""


# --- rides -------------------------------------------------------------------------------------------


@api.post("/rides")
@creates(RideIn, RideOut, "The ride, open")
@api.doc(summary="Start a ride", security=AUTH, responses=responses(*BODY, 401, 403, 404, 409, 503))
def create_ride(body: dict[str, Any], headers: dict[str, Any]) -> Any:
    rider = api_rider(write=True)
    return actions.start_ride(
        current.backend(),
        city=body.get("city") or rider.city,
        rider_id=rider.id,
        rider_city=rider.city,
        vehicle_id=body["vehicle_id"],
        session=rider.session,
        idempotency_key=headers.get("idempotency_key"),
    )


@api.get("/rides")
@api.output(RideOut(many=True), description="My rides, newest first")
@api.doc(summary="My rides", security=AUTH, responses=responses(401, 503))
def list_my_rides() -> Any:
    rider = api_rider(write=False)
    return actions.list_rides(current.backend(), city=rider.city, rider_id=rider.id, session=rider.session)


@api.patch("/rides/<city>/<uuid:ride_id>")
@api.input(RideEndIn, arg_name="body")
@api.output(RideOut, description="The ride, ended; its vehicle is available again")
@api.doc(summary="End my ride", security=AUTH, responses=responses(*BODY, 401, 403, 404, 409, 503))
def end_ride(city: str, ride_id: uuid.UUID, body: dict[str, Any]) -> Any:
    return _on_my_ride(actions.end_ride, city, ride_id, location=body["location"])


@api.post("/rides/<city>/<uuid:ride_id>/promo-code")
@api.input(PromoCodeIn, arg_name="body")
@api.output(RideOut, description="The open ride with the promo code")
@api.doc(
    summary="Apply a promo code to my open ride", security=AUTH, responses=responses(*BODY, 401, 403, 404, 409, 503)
)
def apply_promo_code(city: str, ride_id: uuid.UUID, body: dict[str, Any]) -> Any:
    return _on_my_ride(actions.apply_promo_code, city, ride_id, code=body["code"])


def _on_my_ride(action: Callable[..., Any], city: str, ride_id: uuid.UUID, **fields: Any) -> Any:
    """A write `action` on one of the signed-in rider's rides, named by its path (the rider first: a request
    without a valid sign-in is a 401 whatever the path names)."""
    rider = api_rider(write=True)
    return action(
        current.backend(),
        city=current.known_city(city),
        ride_id=ride_id,
        rider_id=rider.id,
        session=rider.session,
        **fields,
    )


@api.get("/promo-codes")
@api.output(PromoCodeOut(many=True), description="Promo codes that have not expired")
@api.doc(summary="Promo codes", responses=responses(503))
def list_promo_codes() -> Any:
    return actions.list_promo_codes(current.backend())


def document_cities(spec: dict[str, Any], cities: list[str]) -> dict[str, Any]:
    """Spec processor: the preset's cities as the `enum` of every city parameter and body field,
    and `format: uuid` on id path parameters (Werkzeug's uuid converter says nothing to APIFlask)."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.setdefault("schema", {"type": "string"})
                if parameter.get("in") == "path" and parameter.get("name") == "city":
                    schema["enum"] = list(cities)
                elif parameter.get("in") == "path" and parameter.get("name", "").endswith("_id"):
                    schema["format"] = "uuid"
    for schema in spec.get("components", {}).get("schemas", {}).values():
        city = schema.get("properties", {}).get("city")
        if city is not None and city.get("type") == "string":
            city["enum"] = list(cities)
    return spec


def _link(target: str, parameters: dict[str, str] | None = None, body: dict[str, str] | None = None) -> dict:
    link: dict[str, Any] = {"operationId": target}
    if parameters:
        link["parameters"] = parameters
    if body:
        link["requestBody"] = body
    return link


BEARER = {"header.Authorization": "Bearer {$response.body#/token}"}
VEHICLE = {"city": "$response.body#/city", "vehicle_id": "$response.body#/id"}
RIDE = {"city": "$response.body#/city", "ride_id": "$response.body#/id"}
# Links from the operation that creates a resource to the operations that use it (OpenAPI `links`), so
# that a client — or schemathesis's stateful phase — can chain sign up -> log in -> add a vehicle -> ride
# it -> apply a promo code / end it, or remove the vehicle. Keyed by operationId (APIFlask's automatic
# ids: method_blueprint_endpoint), then by the status that returns the resource.
LINKS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "post_api_create_user": (
        "201",
        {
            "LogIn": _link(
                "post_api_create_session",
                body={"username": "$request.body#/username", "password": "$request.body#/password"},
            ),
            "UsersInTheCity": _link("get_api_list_city_users", {"city": "$response.body#/city"}),
        },
    ),
    # No links to log out or remove the account: a fuzzer that sends its own `Authorization` header on
    # every request (st run -H ...) would follow them with that header and end its own session or account.
    "post_api_create_session": (
        "201",
        {
            "MyProfile": _link("get_api_get_me", BEARER),
            "AddVehicle": _link("post_api_create_vehicle", BEARER),
            "MyRides": _link("get_api_list_my_rides", BEARER),
        },
    ),
    "post_api_create_vehicle": (
        "201",
        {
            "RideIt": _link(
                "post_api_create_ride", body={"vehicle_id": "$response.body#/id", "city": "$response.body#/city"}
            ),
            "RemoveIt": _link("delete_api_delete_vehicle", VEHICLE),
            "VehiclesInItsCity": _link("get_api_list_city_vehicles", {"city": "$response.body#/city"}),
        },
    ),
    "post_api_create_ride": (
        "201",
        {
            "EndIt": _link("patch_api_end_ride", RIDE),
            "ApplyPromoCode": _link("post_api_apply_promo_code", RIDE),
            "MyRides": _link("get_api_list_my_rides"),
        },
    ),
    "post_api_apply_promo_code": ("200", {"EndIt": _link("patch_api_end_ride", RIDE)}),
}


def document_contract(spec: dict[str, Any]) -> dict[str, Any]:
    """Spec processor: what the decorators cannot say. A request body is `required` when its schema has
    required fields (APIFlask never marks one: an empty body would pass for valid), and LINKS."""
    operations = {
        operation["operationId"]: operation
        for path in spec.get("paths", {}).values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    schemas = spec.get("components", {}).get("schemas", {})
    for operation in operations.values():
        for media in operation.get("requestBody", {}).get("content", {}).values():
            ref = media.get("schema", {}).get("$ref", "")
            if schemas.get(ref.rpartition("/")[2], {}).get("required"):
                operation["requestBody"]["required"] = True
    for source, (status, links) in LINKS.items():
        operations[source]["responses"][status]["links"] = links
    return spec
