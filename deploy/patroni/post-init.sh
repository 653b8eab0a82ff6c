#!/bin/sh
# Run by Patroni once, on the node that initialised the cluster: the
# service's role and database.
set -e
psql -v ON_ERROR_STOP=1 "$1" <<'SQL'
CREATE ROLE rocket LOGIN PASSWORD 'rocket';
CREATE DATABASE rocket_rides OWNER rocket;
SQL
