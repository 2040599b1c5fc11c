"""Alembic environment for the profile database (see services.common.migrations)."""

from services.common.migrations import run_env
from services.profile.models import metadata

run_env(metadata)
