"""API keys' scopes: integration keys read only what they sent unless an admin widens them; clinician and admin keys
read everything; a key file written before scopes existed keeps working with the role's default."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from twin_imaging.access import ApiKeyRegistry
from twin_imaging.cli import cli
from twin_imaging.errors import InputError


def test_scopes_default_by_role_and_can_be_widened(tmp_path):
    path = tmp_path / "keys.json"
    registry = ApiKeyRegistry.load(path)
    router = registry.create("router-a", role="integration")
    registry.create("ward", role="clinician")
    registry.create("pacs-admin", role="integration", scope="all")
    scopes = {e.name: e.scope for e in ApiKeyRegistry.load(path).entries}
    assert scopes == {"router-a": "own", "ward": "all", "pacs-admin": "all"}
    assert not ApiKeyRegistry.load(path).authenticate(router).sees_everything

    registry.set_scope("router-a", "all")
    assert ApiKeyRegistry.load(path).authenticate(router).sees_everything
    with pytest.raises(InputError, match="unknown scope"):
        registry.set_scope("router-a", "everyone")
    with pytest.raises(InputError, match="no API key named"):
        registry.set_scope("nobody", "all")
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_key_file_from_before_scopes_gets_the_roles_default(tmp_path):
    path = tmp_path / "keys.json"
    old = [
        {"name": "router", "role": "integration", "sha256": "a" * 64, "created": "2026-01-01T00:00:00+00:00"},
        {"name": "ward", "role": "clinician", "sha256": "b" * 64, "created": "2026-01-01T00:00:00+00:00"},
    ]
    path.write_text(json.dumps({"keys": old}))
    assert {e.name: e.scope for e in ApiKeyRegistry.load(path).entries} == {"router": "own", "ward": "all"}
    path.write_text(json.dumps({"keys": [{**old[0], "scope": "some"}]}))
    with pytest.raises(InputError, match="unknown role or scope"):
        ApiKeyRegistry.load(path)


def test_the_cli_creates_lists_and_rescopes_keys(tmp_path):
    path = str(tmp_path / "keys.json")
    runner = CliRunner()
    created = runner.invoke(cli, ["api-key", "create", "--name", "router-a", "--role", "integration", "--file", path])
    assert created.exit_code == 0 and "scope own" in created.output
    assert "router-a\tintegration\town\t" in runner.invoke(cli, ["api-key", "list", "--file", path]).output
    widened = runner.invoke(cli, ["api-key", "scope", "router-a", "all", "--file", path])
    assert widened.exit_code == 0 and "every analysis" in widened.output
    assert "router-a\tintegration\tall\t" in runner.invoke(cli, ["api-key", "list", "--file", path]).output
