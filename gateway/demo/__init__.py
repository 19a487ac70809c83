"""The demo story on one machine: ``gateway serve --demo`` (stack.py) runs the gateway, a worker and stand-ins
(standin.py) for the Leeds hospital's FHIR server and an alert receiver, all on 127.0.0.1.

Nothing here is used by a production deployment; it sits above every layer (like the CLI) and talks to the
gateway only as its operators and partners do: environment variables, hospital files and HTTP.
"""
