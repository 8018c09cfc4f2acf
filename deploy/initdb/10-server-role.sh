#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised (the postgres image's
# /docker-entrypoint-initdb.d): creates the role the server connects as. It owns no
# table and is neither a superuser nor BYPASSRLS, so row-level security holds it; the
# owner (POSTGRES_USER) grants it what it uses after each migration.
set -eu
: "${SEQUESTRA_SERVER_DB_PASSWORD:?set it in deploy/db.env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$SEQUESTRA_SERVER_DB_PASSWORD" <<'SQL'
CREATE ROLE sequestra_server LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'password';
GRANT CONNECT ON DATABASE :"DBNAME" TO sequestra_server;
SQL
