# Shared by scripts/test, scripts/dev and scripts/bench. Source it; do not run it.
#
# ensure_deps      installs what a fresh Debian machine lacks (C compiler, PostgreSQL server,
#                  promtool from the `prometheus` package, amtool from
#                  `prometheus-alertmanager`, python3-venv).
# target_dir       where cargo puts builds: $CARGO_TARGET_DIR when set, else ./target. Each
#                  script makes a relative CARGO_TARGET_DIR absolute before it changes directory.
# pg_start DIR     starts a PostgreSQL cluster in DIR (created with initdb if empty) on a free
#                  port, listening on 127.0.0.1 only (no Unix socket, so any path works, spaces
#                  included), and exports DATABASE_URL. DIR may be a link: PostgreSQL is handed
#                  the resolved path, which the `postgres` user can reach even when the link sits
#                  under /root. As root, the server runs as `postgres` (via runuser), as
#                  PostgreSQL requires.
# pg_stop DIR      stops it.
# ensure_moto      installs moto's S3 server (pinned, in a virtualenv under the user's cache)
#                  for the few tests s3s-fs cannot serve, and exports PORTAIL_MOTO_SERVER.
# ensure_chromium  installs Debian's chromium and chromium-driver (the browser tests of the web
#                  pages) and exports PORTAIL_CHROMEDRIVER.

target_dir() {
  printf '%s\n' "${CARGO_TARGET_DIR:-$PWD/target}"
}

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

ensure_deps() {
  local need=()
  command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  pg_bindir >/dev/null || need+=(postgresql)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3 python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust (rustup) first" >&2; return 1; }
}

# Debian's Chromium and its WebDriver, for the tests of the web pages (tests/tests/ui_browser.rs);
# exports PORTAIL_CHROMEDRIVER.
ensure_chromium() {
  if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
    echo "installing: chromium chromium-driver" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
  fi
  export PORTAIL_CHROMEDRIVER=/usr/bin/chromedriver
}

MOTO_VERSION=5.2.5
ensure_moto() {
  local venv="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/portail/moto-$MOTO_VERSION"
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto[server]==$MOTO_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
  fi
  export PORTAIL_MOTO_SERVER="$venv/bin/moto_server"
}

# Runs a command as the cluster owner: `postgres` when we are root, ourselves otherwise.
as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$(( (RANDOM % 20000) + 30000 ))
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || { echo "$port"; return 0; }
  done
  return 1
}

pg_start() {
  local dir bin port
  bin=$(pg_bindir) || { echo "PostgreSQL binaries not found" >&2; return 1; }
  mkdir -p "$1"
  dir=$(readlink -f -- "$1")
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir" --auth=trust --no-sync -U postgres -E UTF8 >"$dir.initdb.log" 2>&1 \
      || { cat "$dir.initdb.log" >&2; return 1; }
  fi
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    if as_pg "$bin/pg_ctl" -D "$dir" -w -t 30 -l "$dir/server.log" \
         -o "-p $port -k '' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
         start >/dev/null; then
      export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
      export PG_PORT=$port
      return 0
    fi
  done
  cat "$dir/server.log" >&2
  return 1
}

pg_stop() {
  local dir bin
  dir=$(readlink -f -- "$1") || return 0
  bin=$(pg_bindir) || return 0
  [ -f "$dir/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1
  return 0
}
