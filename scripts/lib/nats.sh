# Throwaway NATS server with JetStream for tests and benchmarks. Source this
# file, then call `nats_start` (exports NATS_URL and NATS_SERVER_BIN; call
# `nats_stop` on exit). Installs Debian's nats-server when it is missing and
# this is root on Debian; does nothing when NATS_URL is already set (the
# tests that restart a server still start their own from NATS_SERVER_BIN).

nats_find() {
  command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; }
}

nats_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing nats-server (Debian's package)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null 2>&1
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
    }
  fi
}

nats_start() {
  local bin
  bin=$(nats_find) || true
  if [ -z "$bin" ]; then
    nats_install
    bin=$(nats_find) || true
  fi
  if [ -z "$bin" ]; then
    if [ -n "${NATS_URL:-}" ]; then
      echo "Using NATS_URL from the environment (no nats-server here: the restart tests will fail)." >&2
      return 0
    fi
    echo "nats-server not found: install it (Debian: apt-get install nats-server) or set NATS_URL." >&2
    return 1
  fi
  export NATS_SERVER_BIN=$bin
  if [ -n "${NATS_URL:-}" ]; then
    echo "Using NATS_URL from the environment."
    return 0
  fi
  NATS_DIR=$(mktemp -d /tmp/eventcore-nats.XXXXXX)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin" -js -a 127.0.0.1 -p "$port" -sd "$NATS_DIR/js" >"$NATS_DIR/server.log" 2>&1 &
  NATS_PID=$!
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 200 ] || ! kill -0 "$NATS_PID" 2>/dev/null; then
      cat "$NATS_DIR/server.log" >&2
      return 1
    fi
    sleep 0.05
  done
  export NATS_URL="nats://127.0.0.1:$port"
  echo "Started a throwaway nats-server on 127.0.0.1:$port ($NATS_DIR)."
}

nats_stop() {
  if [ -n "${NATS_PID:-}" ]; then
    kill "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=
  fi
  if [ -n "${NATS_DIR:-}" ]; then
    rm -rf "$NATS_DIR"
    NATS_DIR=
  fi
}
