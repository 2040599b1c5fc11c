"""Alembic environment for the analytics database (see services.common.migrations)."""

from services.analytics.models import metadata
from services.common.migrations import run_env

run_env(metadata)
