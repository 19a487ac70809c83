"""The ``gateway`` command. Each area adds its commands in its own module, listed in COMMAND_MODULES.

The settings are read from the environment once, when the command starts (``Settings.from_env``), and handed to
the command through click's context (``settings()``); commands build what they need with gateway/compose.py.
"""

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
@click.pass_context
def cli(ctx: click.Context) -> None:
    """FHIR R4 trial-matching gateway.

    Configuration comes from GATEWAY_* environment variables; see docs/configuration.md.
    """
    ctx.obj = Settings.from_env()  # the one read of the environment; a bad value stops here, in one line
    # Log records as JSON lines on stderr (stdout is the commands' output); serve and worker log to stdout.
    logs.configure(ctx.obj.observability.log_level, to="stderr")


def settings() -> Settings:
    """The settings the running command was started with."""
    return click.get_current_context().find_root().obj


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(cli)


def main() -> None:
    from gateway.compose import STARTUP_ERRORS, startup_error

    try:
        cli()
    except STARTUP_ERRORS as exc:  # a data file or configuration error at start-up: one line, exit code 1
        raise startup_error(exc) from None
