"""The API contract on a whole lab (multi): README's schemathesis command through the balancer, every phase
with a bearer token, then the stateful phase alone with a fresh one, finds no failure.

(Not tests/lab/test_api_contract.py: pytest needs test file names unique across tests/, and
tests/web/test_api_contract.py runs the same command against one `movr serve`.)
"""

from __future__ import annotations

import pytest
import requests

from stkit import assert_no_failure_in_any_phase, fresh_token, st_run

pytestmark = pytest.mark.lab

EXAMPLES = 8


@pytest.fixture(scope="module")
def multi(lab_factory):
    return lab_factory("multi")


def test_every_phase_through_the_balancer_finds_no_failure(multi, tmp_path):
    base = multi.balancer_url
    run = st_run(base, fresh_token(base), "--seed", "3", examples=EXAMPLES, workdir=tmp_path)
    assert_no_failure_in_any_phase(run, base)


def test_the_stateful_phase_through_the_balancer_finds_no_failure(multi, tmp_path):
    base = multi.balancer_url
    run = st_run(base, fresh_token(base), "--phases", "stateful", "--seed", "4", examples=EXAMPLES, workdir=tmp_path)
    assert run.done.returncode == 0 and run.failed_checks() == [], run.output
    assert run.phases()["stateful"] == "success"
    assert any(linked for (*_, linked) in run.calls()), "no request of the stateful phase followed a link"


def test_a_path_with_an_encoded_newline_reaches_the_app(multi):
    # Found by schemathesis on a lab: a catch-all route of `.*` does not match "\n", and aiohttp then
    # answered with its own text/plain 404 instead of passing the request on to the app.
    response = requests.get(f"{multi.balancer_url}/api/v1/cities/a%0Ab/users", timeout=30)
    assert response.status_code == 404 and response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "unknown_city"
