"""`twin-imaging api-key …`: keys for the inference API, with roles. A key is printed once; only its hash is kept."""

from __future__ import annotations

from pathlib import Path

import click

_file_option = click.option(
    "--file",
    "keys_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file (default: settings, TWIN_IMAGING_API_KEYS_FILE or DATA_DIR/api_keys.json).",
)


def _registry(keys_file: Path | None):
    from twin_imaging.access import ApiKeyRegistry
    from twin_imaging.settings import get_settings

    return ApiKeyRegistry.load(keys_file or get_settings().api_keys_file)


@click.group("api-key")
def api_key() -> None:
    """Create, list and revoke the inference API's keys (roles: integration, clinician, admin)."""


@api_key.command()
@click.option("--name", required=True, help="Who holds the key (the audit log names them api:NAME).")
@click.option("--role", required=True, type=click.Choice(["integration", "clinician", "admin"]))
@click.option(
    "--scope",
    type=click.Choice(["own", "all"]),
    help="What it may read: 'own' = the analyses, files and inbox states it sent (default for integration keys), "
    "'all' = everyone's (default for clinician and admin keys).",
)
@_file_option
def create(name: str, role: str, scope: str | None, keys_file: Path | None) -> None:
    """Create a key and print it (once: it is stored hashed)."""
    registry = _registry(keys_file)
    key = registry.create(name, role=role, scope=scope)
    click.echo(key)
    entry = next(e for e in registry.entries if e.name == name)
    click.echo(
        f"created {role} key {name!r} (scope {entry.scope}) in {registry.path}; store it now, it cannot be shown again",
        err=True,
    )


@api_key.command()
@click.argument("name")
@click.argument("scope", type=click.Choice(["own", "all"]))
@_file_option
def scope(name: str, scope: str, keys_file: Path | None) -> None:
    """Let a key read everyone's analyses ('all') or only what it sent ('own'), from its next request on."""
    _registry(keys_file).set_scope(name, scope)
    click.echo(f"{name!r} now reads {'every analysis' if scope == 'all' else 'only what it sent'}")


@api_key.command("list")
@_file_option
def list_keys(keys_file: Path | None) -> None:
    """Names, roles, scopes and creation times (never the keys)."""
    for entry in _registry(keys_file).entries:
        click.echo(f"{entry.name}\t{entry.role}\t{entry.scope}\t{entry.created}")


@api_key.command()
@click.argument("name")
@_file_option
def revoke(name: str, keys_file: Path | None) -> None:
    """Remove a key; requests with it get 401 from the next request on."""
    _registry(keys_file).revoke(name)
    click.echo(f"revoked {name!r}")
