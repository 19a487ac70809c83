"""Patient-facing pages (server-rendered, NHS.UK frontend): trial search near a postcode and the study page.

They call the same services as the FHIR API, in process, under the same ``Access`` rules; ``init_app(app)``
registers them.
"""

from gateway.web.views import init_app

__all__ = ["init_app"]
