"""The ``gateway`` command. Each area adds its commands in its own module, listed in COMMAND_MODULES."""

from __future__ import annotations

import importlib

import click

from gateway.config import Settings
from gateway.observability import logs

# Modules that define a ``register(cli: click.Group)`` function.
COMMAND_MODULES = [
    "gateway.cli.core",
    "gateway.cli.flows",
    "gateway.cli.outbox",
    "gateway.cli.mapping",
    "gateway.cli.sites",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fhir-trial-gateway")
def cli() -> None:
    """FHIR R4 trial-matching gateway.

    Configuration comes from GATEWAY_* environment variables; see docs/configuration.md.
    """
    # Log records as JSON lines on stderr (stdout is the commands' output); serve and worker log to stdout.
    logs.configure(Settings.from_env().log_level, to="stderr")


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(cli)


def main() -> None:
    from gateway.security.clients import ClientConfigError

    try:
        cli()
    except ClientConfigError as exc:  # a start-up configuration error: one line, exit code 1, no traceback
        raise SystemExit(f"gateway: {exc}") from None
