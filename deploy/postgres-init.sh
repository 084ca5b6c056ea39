#!/bin/sh
# First start of the Compose Postgres: pgvector, and the application role the services under
# row-level security query as (no superuser, no BYPASSRLS). The owner `pa` runs migrations.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v app_password="$PA_DB_APP_PASSWORD" <<'SQL'
CREATE EXTENSION IF NOT EXISTS vector;
CREATE ROLE pa_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'app_password';
SQL
