"""Schemathesis against the OpenAPI document, in process: no 5xx, every response as documented, invalid
requests refused and valid ones accepted (tests/web/test_api_contract.py runs its command line on a server).

Two passes over every operation — without credentials, and with a bearer token of a user who owns a
vehicle and has taken rides — each generating valid (positive) and invalid (negative) requests, plus
requests that name real resources so that success paths run too. Over 1,000 requests in total.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from movr.store import actions

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # fuzzes for many seconds

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20}
MIN_REQUESTS = 1000


def fuzz(schema: Any, operation: Any, mode: GenerationMode, headers: dict[str, str], tally: Counter, **fixed: Any):
    strategy = operation.as_strategy(generation_mode=mode, **fixed)
    # Valid requests must not be refused as malformed (e.g. a required body the document left optional).
    extra = negative_data_rejection if mode is GenerationMode.NEGATIVE else positive_data_acceptance
    checks = [*CHECKS, extra]

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        tally[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=checks, headers=headers)

    try:
        run()
    except Unsatisfiable:
        # No request can break this operation's schema (nothing to send, e.g. GET /cities).
        assert mode is GenerationMode.NEGATIVE


def test_schemathesis_finds_no_5xx_and_no_schema_violation(app, visitor, store):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16

    # A user with a vehicle of their own and a ride on someone else's: real ids for the success paths.
    rider = visitor()
    rider.api_join("fuzzer", "rome")
    me = rider.api("GET", "/users/me").get_json()
    owner = actions.register(store, city="rome", username="owner", password="owner-password")
    ridden = actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike")
    mine = actions.add_vehicle(store, city="rome", owner_id=me["id"], type="scooter")
    ride = actions.start_ride(store, city="rome", rider_id=me["id"], rider_city="rome", vehicle_id=ridden.id)
    real = {"city": "rome", "vehicle_id": str(mine.id), "ride_id": str(ride.id)}

    tally: Counter = Counter()
    bearer = {"Authorization": f"Bearer {rider.token}"}
    # Ending the sessions and removing the account last keep the token valid for every other operation.
    last = ("DELETE /api/v1/sessions", "DELETE /api/v1/users/me/sessions", "DELETE /api/v1/users/me")
    operations.sort(key=lambda op: last.index(op.label) + 1 if op.label in last else 0)
    for headers in ({}, bearer):
        for operation in operations:
            for mode in EXAMPLES:
                fuzz(schema, operation, mode, headers, tally)
            names = {p.name for p in operation.path_parameters}
            if headers and names:
                fixed = {name: real[name] for name in names}
                fuzz(schema, operation, GenerationMode.POSITIVE, headers, tally, path_parameters=fixed)

    total = sum(tally.values())
    statuses = Counter(status for (_, status) in tally.elements())
    print(
        f"schemathesis: {total} requests over {len(operations)} operations; statuses {dict(sorted(statuses.items()))}"
    )
    assert total >= MIN_REQUESTS
    assert not [s for s in statuses if s >= 500]
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
