#!/usr/bin/env bash
# Make sure what the integration tests need is installed and up: PostgreSQL, MariaDB,
# and the Debian packages for ZooKeeper, Chromium, Prometheus, buildah and debootstrap
# (ZooKeeper and Prometheus servers themselves are started by the test fixtures on free
# loopback ports).
# The machine normally starts them; this starts any that are down. With CI=true a
# service that cannot be started is a failure (the tests fail too, never skip).
set -uo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
maria_up() { mariadb-admin -h 127.0.0.1 -P 3306 -uroot status >/dev/null 2>&1 || mysqladmin -h 127.0.0.1 -P 3306 -uroot status >/dev/null 2>&1; }

wait_for() { # name check-fn
  for _ in $(seq 1 60); do "$2" && return 0; sleep 0.5; done
  echo "ensure-services: $1 did not come up" >&2; return 1
}

status=0

# Debian packages the tests need: ZooKeeper (distributed mode), Chromium (dashboard test),
# Prometheus (promtool for the alert rule tests, the server for tests/e2e/test_prometheus.py),
# buildah and debootstrap (tests/image builds the container image on a Debian base it
# makes; `make image` too).
missing=()
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# one package: promtool checks docs/alerts.yaml, the server runs the rules end to end
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/buildah ] || missing+=(buildah)
[ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-services: installing ${missing[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null 2>&1 \
      || { echo "ensure-services: apt-get install ${missing[*]} failed" >&2; status=1; }
  else
    echo "ensure-services: missing ${missing[*]} (install them as root)" >&2
    status=1
  fi
fi

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "ensure-services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  wait_for PostgreSQL pg_up || status=1
fi
if ! maria_up; then
  if [ -x /usr/sbin/mariadbd ]; then
    echo "ensure-services: starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
  wait_for MariaDB maria_up || status=1
fi
if [ "$status" -ne 0 ] && [ "${CI:-}" != "true" ]; then
  echo "ensure-services: some services are missing; their tests will be skipped (CI=true fails instead)" >&2
  status=0
fi
exit $status
