"""`python -m services.profile.migrate`: upgrade the profile database to head."""

from services.profile.main import migrate_cmd

if __name__ == "__main__":
    migrate_cmd()
