#!/usr/bin/env bash
# A RabbitMQ vhost of the test run's own: `reset NAME` (delete if present,
# create, grant guest) or `delete NAME`. Touches no other vhost.
set -euo pipefail
action=${1:?usage: rabbitmq_vhost.sh reset|delete NAME}
vhost=${2:?usage: rabbitmq_vhost.sh reset|delete NAME}
if ! command -v rabbitmqctl >/dev/null 2>&1; then
  echo "rabbitmqctl not found: the production-profile tests need a local RabbitMQ (see docs/running.md)" >&2
  exit 1
fi
case "$action" in
  reset)
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
    rabbitmqctl -q add_vhost "$vhost"
    rabbitmqctl -q set_permissions -p "$vhost" guest ".*" ".*" ".*"
    ;;
  delete)
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
    ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
