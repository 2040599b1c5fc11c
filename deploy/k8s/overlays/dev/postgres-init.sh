#!/bin/sh
# First start of an empty PostgreSQL data directory (docker-entrypoint-initdb.d): one role and one
# database per service, each owned by its role, none readable by the others. Passwords come from
# the environment (PROFILE_DB_PASSWORD, ANALYTICS_DB_PASSWORD, GATEWAY_DB_PASSWORD).
# Used by docker compose and, as a copy, by the k8s dev overlay (a test keeps the two identical).
set -eu

create_service_db() {
  # psql variables (:"name" quotes an identifier, :'name' a literal) keep the values out of
  # the SQL text, so a password cannot inject SQL.
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --set=svc="$1" --set=pass="$2" <<'SQL'
CREATE ROLE :"svc" LOGIN PASSWORD :'pass';
CREATE DATABASE :"svc" OWNER :"svc";
REVOKE ALL ON DATABASE :"svc" FROM PUBLIC;
SQL
}

create_service_db profile "${PROFILE_DB_PASSWORD:?PROFILE_DB_PASSWORD is not set}"
create_service_db analytics "${ANALYTICS_DB_PASSWORD:?ANALYTICS_DB_PASSWORD is not set}"
create_service_db gateway "${GATEWAY_DB_PASSWORD:?GATEWAY_DB_PASSWORD is not set}"
echo "avatario: created databases profile, analytics, gateway"
