"""``fhir``: the Flask test client, checking every FHIR JSON response body against the official R4 schema."""

from __future__ import annotations

import pytest

from tests.conftest import FHIR_JSON
from tests.fhir.schema import assert_valid


class CheckedClient:
    """Wraps the test client: each call returns the response after validating its FHIR body (if any).

    >>> fhir.get("/fhir/Patient/1")  # raises AssertionError if the body is not valid R4
    """

    def __init__(self, client):
        self.client = client
        self.checked = 0

    def _call(self, method: str, url: str, **kw):
        headers = {**FHIR_JSON, **kw.pop("headers", {})}
        resp = getattr(self.client, method)(url, headers=headers, **kw)
        if resp.data and resp.mimetype == "application/fhir+json":
            assert_valid(resp.get_json())
            self.checked += 1
        return resp

    def get(self, url: str, **kw):
        return self._call("get", url, **kw)

    def post(self, url: str, **kw):
        return self._call("post", url, **kw)

    def put(self, url: str, **kw):
        return self._call("put", url, **kw)

    def delete(self, url: str, **kw):
        return self._call("delete", url, **kw)

    def patch(self, url: str, **kw):
        return self._call("patch", url, **kw)


@pytest.fixture
def fhir(client) -> CheckedClient:
    return CheckedClient(client)
