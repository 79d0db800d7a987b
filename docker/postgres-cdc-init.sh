#!/usr/bin/env bash
# Run once by the postgres image's entrypoint (/docker-entrypoint-initdb.d/) in docker-compose:
# the connector's replication role, as `segstream services up --cdc` makes it locally
# (segstream/services/postgres.py; tests/unit/services/test_postgres.py keeps the two equal).
# The image's POSTGRES_USER (segstream) owns the shop database (POSTGRES_DB).
set -euo pipefail
: "${SEGSTREAM_CDC_DATABASE_PASSWORD:?set SEGSTREAM_CDC_DATABASE_PASSWORD (e.g. in .env)}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=cdc_password="$SEGSTREAM_CDC_DATABASE_PASSWORD" <<'SQL'
CREATE ROLE "segstream_cdc" WITH LOGIN REPLICATION NOSUPERUSER PASSWORD :'cdc_password';
GRANT CONNECT ON DATABASE "shop" TO "segstream_cdc";
CREATE SCHEMA IF NOT EXISTS "public";
GRANT USAGE ON SCHEMA "public" TO "segstream_cdc";
GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "segstream_cdc";
ALTER DEFAULT PRIVILEGES FOR ROLE "segstream" IN SCHEMA "public" GRANT SELECT ON TABLES TO "segstream_cdc";
SQL
