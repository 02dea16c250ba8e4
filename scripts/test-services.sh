#!/usr/bin/env bash
# Services the test suite needs: nothing yet (the PostgreSQL server for the distributed
# search tests is added by the evolve work). `start` and `stop` must be idempotent.
set -eu
case "${1:-}" in
  start) ;;
  stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
