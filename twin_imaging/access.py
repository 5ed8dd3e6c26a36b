"""API keys with roles for the service's doors: stored hashed, shown once, checked in constant time.

    registry = ApiKeyRegistry.load(settings.api_keys_file)
    key = registry.create("pacs-router", role="integration")   # printed once; only its SHA-256 is written
    entry = registry.authenticate(presented_key)               # None where unknown

Keys are 256-bit random tokens, so an unsalted SHA-256 is enough to store them (no password stretching needed:
nothing to brute-force); a leaked key file does not reveal a usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from twin_imaging.errors import InputError
from twin_imaging.files import atomic_path

ROLES = ("integration", "clinician", "admin")
# What a key's analyses, artifacts, jobs and inbox states it may read: "own" = only what it sent, "all" = everyone's.
# Integration keys (one per router or hospital) start at "own"; clinicians and admins read every patient's.
SCOPES = ("own", "all")
DEFAULT_SCOPE = {"integration": "own", "clinician": "all", "admin": "all"}
KEY_PREFIX = "tik_"  # recognisable in a secret scanner
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


@dataclass(frozen=True)
class ApiKeyEntry:
    name: str  # who holds it: the audit log's actor is "api:<name>"
    role: str
    sha256: str
    created: str  # ISO 8601, UTC
    scope: str = ""  # "own" or "all"; empty (a key file written before scopes) means the role's default

    def __post_init__(self) -> None:
        if not self.scope:
            object.__setattr__(self, "scope", DEFAULT_SCOPE.get(self.role, "own"))

    @property
    def actor(self) -> str:
        return f"api:{self.name}"

    @property
    def sees_everything(self) -> bool:
        return self.scope == "all"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyRegistry:
    """The key file: ``{"keys": [{"name", "role", "sha256", "created"}, ...]}``, written atomically, mode 0600."""

    def __init__(self, path: Path | None, entries: list[ApiKeyEntry]) -> None:
        self.path = path
        self.entries = entries

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> ApiKeyRegistry:
        if path is None:
            return cls(None, [])
        path = Path(path)
        if not path.exists():
            return cls(path, [])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = [ApiKeyEntry(**item) for item in data["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"API key file {path} is unreadable: {exc}") from None
        bad = [e.name for e in entries if e.role not in ROLES or e.scope not in SCOPES or len(e.sha256) != 64]
        if bad:
            raise InputError(f"API key file {path}: entries with an unknown role or scope, or a malformed hash: {bad}")
        return cls(path, entries)

    def authenticate(self, key: str | None) -> ApiKeyEntry | None:
        """The entry of a presented key, or None. Every entry is compared (constant time) so timing tells nothing."""
        if not key:
            return None
        digest = hash_api_key(key)
        found = None
        for entry in self.entries:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    def create(self, name: str, *, role: str, scope: str | None = None) -> str:
        """A new key for ``name`` with ``role`` (and ``scope``, else the role's default); returns the key (the only
        time it exists in clear)."""
        if role not in ROLES:
            raise InputError(f"unknown role {role!r}; choose from {list(ROLES)}")
        scope = scope or DEFAULT_SCOPE[role]
        if scope not in SCOPES:
            raise InputError(f"unknown scope {scope!r}; choose from {list(SCOPES)}")
        if not name or len(name) > 100 or set(name) - _NAME_CHARS:
            raise InputError("a key name has 1-100 characters from letters, digits and - _ . @")
        if any(e.name == name for e in self.entries):
            raise InputError(f"a key named {name!r} exists already; revoke it first")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(UTC).replace(microsecond=0).isoformat()
        self.entries.append(ApiKeyEntry(name=name, role=role, sha256=hash_api_key(key), created=created, scope=scope))
        self._save()
        return key

    def set_scope(self, name: str, scope: str) -> None:
        """Widen (``all``) or narrow (``own``) what a key may read; takes effect at the service's next request."""
        if scope not in SCOPES:
            raise InputError(f"unknown scope {scope!r}; choose from {list(SCOPES)}")
        if not any(e.name == name for e in self.entries):
            raise InputError(f"no API key named {name!r}")
        self.entries = [ApiKeyEntry(**{**asdict(e), "scope": scope}) if e.name == name else e for e in self.entries]
        self._save()

    def revoke(self, name: str) -> None:
        if not any(e.name == name for e in self.entries):
            raise InputError(f"no API key named {name!r}")
        self.entries = [e for e in self.entries if e.name != name]
        self._save()

    def _save(self) -> None:
        if self.path is None:
            raise InputError("no API key file is configured (TWIN_IMAGING_API_KEYS_FILE)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"keys": [asdict(e) for e in self.entries]}, indent=2) + "\n"
        with atomic_path(self.path, mode=0o600) as temporary:  # readable by its owner only
            temporary.write_bytes(body.encode("utf-8"))
