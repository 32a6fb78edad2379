#!/bin/sh
# PostgreSQL first-start init (docker-entrypoint-initdb.d): one database per PostgreSQL-backed
# service, each owned by its own role, so no service can read another's data.  The roles'
# password is SERVICE_DB_PASSWORD (x-local-dev-only: a local development default, see
# docker-compose.yml).  Runs only when the data volume is empty.
for db in shop_user shop_order shop_comment; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v db="$db" -v password="$SERVICE_DB_PASSWORD" <<'SQL' || exit 1
CREATE ROLE :"db" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
done
# The service roles reach their own database only.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -c 'REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC' || exit 1
