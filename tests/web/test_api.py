"""The JSON API: every endpoint, its errors as `{"error": {"code", "message"}}`, and its authorization rules."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


def error_of(response) -> tuple[int, str]:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


def test_journey_through_the_api(visitor, counts):
    v = visitor()
    created = v.api(
        "POST", "/users", json={"username": "ada", "password": PASSWORD, "city": "rome", "first_name": "Ada"}
    )
    assert created.status_code == 201
    assert created.get_json()["username"] == "ada" and created.get_json()["city"] == "rome"
    assert "password" not in created.get_data(as_text=True)

    session = v.api("POST", "/sessions", json={"username": "ada", "password": PASSWORD})
    assert session.status_code == 201
    body = session.get_json()
    assert body["token_type"] == "Bearer" and body["token"] and body["csrf_token"] and body["user"]["username"] == "ada"
    cookie = session.headers["Set-Cookie"]
    assert "movr_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    v.token = body["token"]

    me = v.api("GET", "/users/me")
    assert me.status_code == 200 and me.get_json()["first_name"] == "Ada"
    assert int(me.headers["X-Movr-Statements"]) == 1

    cities = v.api("GET", "/cities").get_json()
    assert {"name": "rome", "region": "europe-west1", "local": False} in cities and len(cities) == 9
    vehicle = v.api("POST", "/vehicles", json={"type": "scooter", "brand": "Vespa", "location": "Piazza"})
    assert vehicle.status_code == 201 and vehicle.get_json()["status"] == "available"
    vehicle_id = vehicle.get_json()["id"]
    listed = v.api("GET", "/cities/rome/vehicles").get_json()
    assert [x["id"] for x in listed] == [vehicle_id] and listed[0]["owner_username"] == "ada"

    ride = v.api("POST", "/rides", json={"city": "rome", "vehicle_id": vehicle_id})
    assert ride.status_code == 201 and ride.get_json()["is_open"] is True
    ride_id = ride.get_json()["id"]
    assert v.api("GET", "/cities/rome/vehicles").get_json() == []
    assert [x["id"] for x in v.api("GET", "/cities/rome/vehicles?all=true").get_json()] == [vehicle_id]

    codes = v.api("GET", "/promo-codes").get_json()
    assert {c["code"] for c in codes} >= {"WELCOME10"}
    promo = v.api("POST", f"/rides/rome/{ride_id}/promo-code", json={"code": "welcome10"})
    assert promo.status_code == 200 and promo.get_json()["promo_code"] == "WELCOME10"
    ended = v.api("PATCH", f"/rides/rome/{ride_id}", json={"location": "Station"})
    assert ended.status_code == 200 and ended.get_json()["end_location"] == "Station"
    assert ended.get_json()["is_open"] is False and ended.get_json()["length_seconds"] >= 0
    rides = v.api("GET", "/rides").get_json()
    assert [r["id"] for r in rides] == [ride_id]

    users = v.api("GET", "/cities/rome/users").get_json()
    assert [u["username"] for u in users] == ["ada"] and "email" not in users[0]

    assert v.api("DELETE", f"/vehicles/rome/{vehicle_id}").status_code == 204
    assert v.api("DELETE", "/users/me").status_code == 204
    assert counts()["users"] == 0
    assert error_of(v.api("GET", "/users/me")) == (401, "session_ended")  # a removed account's token is refused
    assert v.api("DELETE", "/sessions").status_code == 204


def test_framework_errors_are_json_too(visitor):
    v = visitor()
    assert error_of(v.api("GET", "/nothing/here")) == (404, "not_found")
    wrong_method = v.api("PUT", "/cities")
    assert error_of(wrong_method) == (405, "method_not_allowed") and "GET" in wrong_method.headers["Allow"]
    bad_json = v.api("POST", "/users", data="{not json", content_type="application/json")
    assert error_of(bad_json)[0] == 400
    assert error_of(v.api("POST", "/users", json={"username": "ada"})) == (422, "invalid_input")
    assert error_of(v.api("POST", "/users", json=["a", "list"])) == (422, "invalid_input")
    unknown_field = v.api("POST", "/users", json={"username": "ada", "password": PASSWORD, "city": "rome", "x": 1})
    assert error_of(unknown_field) == (422, "invalid_input")
    huge = v.api("POST", "/users", data="x" * 100_000, content_type="application/json")
    assert error_of(huge) == (413, "payload_too_large")
    assert error_of(v.api("GET", "/cities/atlantis/vehicles")) == (404, "unknown_city")
    assert error_of(v.api("GET", "/cities/rome/vehicles?all=maybe")) == (422, "invalid_input")
    assert error_of(v.api("DELETE", "/vehicles/rome/not-a-uuid")) == (404, "not_found")


def test_domain_errors_of_the_api(visitor, counts):
    ada = visitor()
    ada.api_join("ada", "rome")
    assert error_of(ada.api("POST", "/users", json={"username": "ada", "password": PASSWORD, "city": "paris"})) == (
        409,
        "username_taken",
    )
    assert error_of(ada.api("POST", "/users", json={"username": "bob", "password": PASSWORD, "city": "mars"})) == (
        422,
        "bad_city",
    )
    assert error_of(ada.api("POST", "/sessions", json={"username": "ada", "password": "wrong-password"})) == (
        401,
        "bad_credentials",
    )
    assert error_of(ada.api("POST", "/vehicles", json={"type": "bike", "city": "paris"})) == (409, "wrong_city")
    assert error_of(ada.api("POST", "/rides", json={"vehicle_id": str(uuid.uuid4())})) == (404, "unknown_vehicle")
    assert error_of(ada.api("POST", "/rides", json={"vehicle_id": str(uuid.uuid4()), "city": "paris"})) == (
        409,
        "wrong_city",
    )
    assert error_of(ada.api("PATCH", f"/rides/rome/{uuid.uuid4()}", json={})) == (404, "unknown_ride")
    assert error_of(ada.api("DELETE", f"/vehicles/rome/{uuid.uuid4()}")) == (404, "unknown_vehicle")

    vehicle = ada.api("POST", "/vehicles", json={"type": "bike"}).get_json()
    spare = ada.api("POST", "/vehicles", json={"type": "scooter"}).get_json()
    ride = ada.api("POST", "/rides", json={"vehicle_id": vehicle["id"]}).get_json()
    assert error_of(ada.api("POST", "/rides", json={"vehicle_id": vehicle["id"]})) == (409, "vehicle_not_available")
    assert error_of(ada.api("POST", "/rides", json={"vehicle_id": spare["id"]})) == (409, "ride_open")
    assert error_of(ada.api("DELETE", f"/vehicles/rome/{vehicle['id']}")) == (409, "vehicle_in_use")
    assert error_of(ada.api("DELETE", "/users/me")) == (409, "ride_open")
    promo = ada.api("POST", f"/rides/rome/{ride['id']}/promo-code", json={"code": "NOPE"})
    assert error_of(promo) == (404, "unknown_promo_code")
    assert ada.api("PATCH", f"/rides/rome/{ride['id']}", json={}).status_code == 200
    assert error_of(ada.api("PATCH", f"/rides/rome/{ride['id']}", json={})) == (409, "ride_already_ended")
    assert counts()["open_rides"] == 0


def test_every_write_is_authorized(visitor, counts):
    ada = visitor()
    ada.api_join("ada", "rome")
    bob = visitor()
    bob.api_join("bob", "rome")
    vehicle = ada.api("POST", "/vehicles", json={"type": "bike"}).get_json()
    ride = ada.api("POST", "/rides", json={"vehicle_id": vehicle["id"]}).get_json()
    before = counts()

    assert error_of(bob.api("PATCH", f"/rides/rome/{ride['id']}", json={})) == (403, "not_your_ride")
    promo = bob.api("POST", f"/rides/rome/{ride['id']}/promo-code", json={"code": "WELCOME10"})
    assert error_of(promo) == (403, "not_your_ride")
    assert error_of(bob.api("DELETE", f"/vehicles/rome/{vehicle['id']}")) == (403, "not_your_vehicle")
    assert bob.api("DELETE", "/users/me").status_code == 204  # removes bob, only bob
    assert counts()["users"] == before["users"] - 1
    assert {k: v for k, v in counts().items() if k != "users"} == {k: v for k, v in before.items() if k != "users"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/users/me", None),
        ("DELETE", "/users/me", None),
        ("POST", "/vehicles", {"type": "bike"}),
        ("DELETE", f"/vehicles/rome/{uuid.uuid4()}", None),
        ("POST", "/rides", {"vehicle_id": str(uuid.uuid4())}),
        ("GET", "/rides", None),
        ("PATCH", f"/rides/rome/{uuid.uuid4()}", {}),
        ("POST", f"/rides/rome/{uuid.uuid4()}/promo-code", {"code": "X"}),
    ],
)
def test_private_endpoints_need_credentials(visitor, method, path, body):
    v = visitor()
    assert error_of(v.api(method, path, json=body)) == (401, "unauthenticated")
    forged = v.api(method, path, json=body, headers={"Authorization": "Bearer not-a-token"})
    assert error_of(forged) == (401, "unauthenticated")
    basic = v.api(method, path, json=body, headers={"Authorization": "Basic YWRhOnB3"})
    assert error_of(basic) == (401, "unauthenticated")


def test_tokens_are_signed_and_expire(app, visitor):
    v = visitor()
    v.api_join("ada", "rome")
    assert v.api("GET", "/rides").status_code == 200
    tampered = v.token[:-2] + ("AA" if not v.token.endswith("AA") else "BB")
    assert v.api("GET", "/rides", bearer=False, headers={"Authorization": f"Bearer {tampered}"}).status_code == 401
    app.config["MOVR_TOKEN_MAX_AGE"] = -1
    assert error_of(v.api("GET", "/rides")) == (401, "unauthenticated")


def test_the_api_reads_the_session_cookie_and_writes_need_the_csrf_header(visitor, counts):
    v = visitor()
    v.api_join("ada", "rome")
    csrf = v.api("POST", "/sessions", json={"username": "ada", "password": PASSWORD}).get_json()["csrf_token"]
    assert v.api("GET", "/rides", bearer=False).status_code == 200  # reads: the cookie is enough
    before = counts()
    refused = v.api("POST", "/vehicles", bearer=False, json={"type": "bike"})
    assert error_of(refused) == (403, "csrf_failed") and counts() == before
    wrong = v.api("POST", "/vehicles", bearer=False, json={"type": "bike"}, headers={"X-CSRFToken": "nope"})
    assert error_of(wrong) == (403, "csrf_failed") and counts() == before
    ok = v.api("POST", "/vehicles", bearer=False, json={"type": "bike"}, headers={"X-CSRFToken": csrf})
    assert ok.status_code == 201 and counts()["vehicles"] == before["vehicles"] + 1
    assert v.api("POST", "/vehicles", json={"type": "bike"}).status_code == 201  # bearer: no CSRF needed
    assert v.api("DELETE", "/sessions", bearer=False).status_code == 204
    assert error_of(v.api("GET", "/rides", bearer=False)) == (401, "unauthenticated")


def test_openapi_document_describes_every_endpoint_and_its_errors(visitor):
    spec = visitor().get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert all(path.startswith("/api/v1/") for path in paths), "pages, health and metrics are not in the API"
    operations = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert len(operations) == 16
    assert ("PATCH", "/api/v1/rides/{city}/{ride_id}") in operations
    assert ("DELETE", "/api/v1/users/me/sessions") in operations
    error_ref = {"$ref": "#/components/schemas/HTTPError"}
    for path, ops in paths.items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema in (error_ref, {"$ref": "#/components/schemas/ValidationError"}), (path, status)
            if op.get("security"):
                assert "401" in op["responses"], (method, path)
    assert spec["components"]["schemas"]["HTTPError"]["required"] == ["error"]
    assert set(spec["components"]["securitySchemes"]) == {"BearerAuth", "SessionCookie"}
    assert "cdn" not in str(spec).lower()
