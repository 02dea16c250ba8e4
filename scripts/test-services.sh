#!/usr/bin/env bash
# What the test suite needs from the system: the PostgreSQL server binaries, for the test in
# which two search workers share one study, and Chromium, for the report screenshot test.
# The tests start and stop their own private server on loopback (tests/pg_server.py) and
# their own headless browser; this script only makes sure both can be installed.
set -eu
case "${1:-}" in
  start)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
      echo "== installing PostgreSQL (Debian package) for the distributed-search test"
      if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      fi
    fi
    if [ ! -x /usr/bin/chromium ]; then
      echo "== installing Chromium (Debian package) for the headless report screenshot test"
      if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
      else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
      fi
    fi ;;
  stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
