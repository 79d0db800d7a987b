#!/usr/bin/env bash
# Installs the machine-level programs segstream runs against, when they are missing:
# Java 17+ and Maven (the Kafka broker and Kafka Connect with Debezium from Maven Central),
# redis-server, PostgreSQL (the SQLAlchemy-URL tests and the change-data-capture stack, run as
# the postgres user through util-linux's setpriv), kcat (a real Kafka client for checking
# topics by hand), chromium (the status page's headless-browser test) and prometheus with
# promtool (the alert rules' unit tests, the monitoring integration test, `services up
# --monitoring`).
# Idempotent: does nothing when everything is there.
set -euo pipefail

declare -A package_of=(
  [java]=openjdk-17-jre-headless
  [mvn]=maven
  [redis-server]=redis-server
  [kcat]=kcat
  [initdb]=postgresql
  [chromium]=chromium
  [promtool]=prometheus
)

have() {
  if [ "$1" = initdb ]; then
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
  else
    command -v "$1" >/dev/null 2>&1
  fi
}

missing=()
for tool in "${!package_of[@]}"; do
  have "$tool" || missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "segstream needs these Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system-wide redis-server, PostgreSQL and Prometheus on install; segstream
# runs its own.
for svc in redis-server postgresql prometheus; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
