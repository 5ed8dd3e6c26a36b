"""The patient twin: a persistent, longitudinal record per patient (studies, analyses with provenance,
measurements, artifacts, observations, procedures, predictions, alerts) with an audit log.

``TwinStore`` is the API; ``views`` holds the plain values it returns; ``schema`` the tables and ``migrations`` the
Alembic scripts that create them; ``artifacts`` the content-addressed file store.
"""

from twin_imaging.twin.artifacts import ArtifactStore
from twin_imaging.twin.database import create_twin_engine, upgrade_database
from twin_imaging.twin.store import TwinStore

__all__ = ["ArtifactStore", "TwinStore", "create_twin_engine", "upgrade_database"]
