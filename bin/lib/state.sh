# Sourced by bin/container-start and bin/pod-setup: the state Lexia keeps on a volume under $DATA.
# PostgreSQL and Redis run on loopback ports ($PG_PORT, $REDIS_PORT) as $RUN_AS (empty: this user).

lexia_secrets() {  # generate $DATA/secrets.env once (mode 0600) and export what it holds
  local secrets="$DATA/secrets.env" py="${VENV:-.venv}/bin/python"
  [ -x "$py" ] || py=python3
  mkdir -p "$DATA"/{postgres,redis,audio,models,logs,run}
  chmod 700 "$DATA"/postgres "$DATA"/run
  if [ ! -f "$secrets" ]; then
    ( umask 077
      { echo "LEXIA_KEY_PEPPER=$("$py" -c 'import secrets; print(secrets.token_urlsafe(48))')"
        echo "LEXIA_METRICS_TOKEN=$("$py" -c 'import secrets; print(secrets.token_urlsafe(32))')"
        echo "PG_PASSWORD=$("$py" -c 'import secrets; print(secrets.token_urlsafe(32))')"
      } > "$secrets" )
    echo "lexia: generated secrets in $secrets (keep the volume: keys are hashed with the pepper)"
  fi
  set -a; . "$secrets"; set +a
}

lexia_postgres() {  # a UTF-8 cluster with password auth only (no trust), started if it is not running
  local pgbin
  pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1)")
  [ -x "$pgbin/initdb" ] || { echo "lexia: PostgreSQL is not installed (apt-get install postgresql)" >&2; return 1; }
  if [ ! -f "$DATA/postgres/PG_VERSION" ]; then
    local pwfile="$DATA/run/pgpass.tmp"
    ( umask 077; echo "$PG_PASSWORD" > "$pwfile" )
    [ -z "$RUN_AS" ] || chown "$RUN_AS" "$DATA/postgres" "$DATA/run" "$pwfile"
    $RUN "$pgbin/initdb" -D "$DATA/postgres" -U lexia -E UTF8 --locale=C.UTF-8 \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
  fi
  if ! $RUN "$pgbin/pg_ctl" -D "$DATA/postgres" status >/dev/null 2>&1; then
    touch "$DATA/logs/postgres.log"; [ -z "$RUN_AS" ] || chown "$RUN_AS" "$DATA/logs/postgres.log"
    $RUN "$pgbin/pg_ctl" -D "$DATA/postgres" -l "$DATA/logs/postgres.log" -w start \
      -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$DATA/run" >/dev/null
  fi
}

lexia_redis() {  # Redis with an append-only file on the volume, started if it does not answer
  command -v redis-server >/dev/null || { echo "lexia: Redis is not installed (apt-get install redis-server)" >&2; return 1; }
  if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    [ -z "$RUN_AS" ] || chown "$RUN_AS" "$DATA/redis"
    $RUN redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DATA/redis" \
      --appendonly yes --save 60 1 --logfile "$DATA/redis/redis.log"
  fi
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 1; done
  echo "lexia: Redis did not answer on 127.0.0.1:$REDIS_PORT (see $DATA/redis/redis.log)" >&2
  return 1
}

lexia_first_key() {  # the first admin key, printed once (only its hash is stored)
  if [ ! -f "$DATA/.first-key-printed" ]; then
    echo "lexia: your first admin key (shown once; only its hash is stored):"
    bin/lexia-key create --name admin --scopes '*'
    touch "$DATA/.first-key-printed"
  fi
}

PG_PORT=${PG_PORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
RUN_AS=${RUN_AS:-}
RUN=""
[ -z "$RUN_AS" ] || RUN="runuser -u $RUN_AS --"
