#!/usr/bin/env bash
# mysql-sandbox.sh -- throw-away MariaDB master + GTID read replicas for kvgrpc.
#
# Usage: scripts/mysql-sandbox.sh up | down [--purge] | status | env | install
#        scripts/mysql-sandbox.sh kill ROLE | stop ROLE | start ROLE | wipe master
#
#   up      Create (from nothing) and start a master and its replicas on
#           127.0.0.1 (semi-synchronous GTID replication), wait until every
#           replica has caught up, write <dir>/env and print the two
#           connection URLs on stdout, so that
#               eval "$(scripts/mysql-sandbox.sh up)"
#           sets KVGRPC_MASTER_URL / KVGRPC_REPLICA_URL (not exported; with
#           several replicas KVGRPC_REPLICA_URL is a comma-separated list).
#           If the sandbox is already running, just prints them again.
#   down    Stop all servers (by the PIDs in their pid files only).
#           --purge also removes the sandbox directory.
#   status  Show whether each server runs, the master's semi-sync state and
#           each replica's thread states. Exit 0 only if all run, replication
#           is healthy (threads running, no replica ahead of the master) and
#           semi-sync is active on the master and every replica.
#   env     Print <dir>/env if the sandbox is up, else exit 1.
#   install Only make sure the MariaDB binaries exist (apt-get install of
#           mariadb-server and mariadb-client, as root, only where missing;
#           `up` does the same). Used by scripts/test.sh.
#
# Fault injection (for automated fault tests; ROLE is master, replica,
# replica2 or replica3; each is bounded and updates the PID entries in
# <dir>/env):
#   kill ROLE    kill -9 that server and wait until it is gone.
#   stop ROLE    Clean shutdown (TERM, bounded wait, then KILL).
#   start ROLE   Start a stopped/killed server again with its datadir and
#                config and wait until it accepts connections (a replica then
#                reconnects to the master on its own; this does not wait for
#                it to catch up). No-op if it runs.
#   wipe master  Only while the master is down: destroy its datadir and start
#                a blank master in its place (same config and port) with the
#                kvgrpc database and the kvgrpc, kvgrpc_admin and repl accounts
#                re-created -- same passwords, not binlogged -- and no table
#                data. The replicas are not touched. Note that they do NOT
#                fail: MariaDB lets a replica resume at a GTID in a domain the
#                master has no binlog for, so they reconnect to the blank master
#                and silently skip its transactions until its sequence numbers
#                pass theirs (and apply the rest after that). `status` reports
#                such a replica as diverged (ahead of the master).
#   Note that `up` on a sandbox where a server is down rebuilds everything
#   from nothing; use `start ROLE` to bring one server back.
#
# Environment:
#   KVGRPC_SANDBOX_DIR       sandbox directory (default: <repo>/.sandbox)
#   KVGRPC_SANDBOX_PORT      master TCP port (default 23306); replica N uses
#                            port+N (all must be below 32768).
#   KVGRPC_SANDBOX_REPLICAS  number of replicas, 1..3 (default 1): roles
#                            replica, replica2, replica3.
#   For an existing sandbox, all commands but `up` use the port and replica
#   count recorded in <dir>/env.
#
# <dir>/env also holds KVGRPC_SANDBOX_<ROLE>_{SOCKET,PID,PORT} for every
# server, KVGRPC_SANDBOX_REPLICAS, and KVGRPC_ADMIN_MASTER_URL /
# KVGRPC_ADMIN_REPLICA_URL for the kvgrpc_admin account (ALL PRIVILEGES ON *.*
# WITH GRANT OPTION). <dir>/secrets (mode 600) keeps all account passwords.
#
# The servers are fully isolated from any system MariaDB: they are started
# with --defaults-file pointing at a generated my.cnf (so /etc/mysql and
# ~/.my.cnf are never read), use their own datadir/socket/pid file, listen on
# 127.0.0.1 only, and every client call here uses --no-defaults.
# Everything except the two URL lines printed by `up` goes to stderr.

set -euo pipefail

# ---------------------------------------------------------------- config ---

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname -- "$SCRIPT_DIR")

SANDBOX_DIR=${KVGRPC_SANDBOX_DIR:-$REPO_DIR/.sandbox}
MASTER_PORT=${KVGRPC_SANDBOX_PORT:-23306}
REPLICAS=${KVGRPC_SANDBOX_REPLICAS:-1}
MAX_REPLICAS=3

# Every role there can be, in port / server_id order (master = port, server_id
# 1; replicaN = port+N, server_id N+1). ROLES / REPLICA_ROLES are the ones of
# this sandbox (set_roles).
ALL_ROLES=(master replica replica2 replica3)
ROLES=()
REPLICA_ROLES=()

# Written into the sandbox dir; we only ever delete a directory holding it.
MARKER_NAME=.kvgrpc-mysql-sandbox
# How long (seconds) to wait for start-up, replication and shutdown.
TIMEOUT=30
# Semi-sync: how long (ms) a commit on the master waits for a replica's ack
# before the master falls back to asynchronous replication.
SEMISYNC_TIMEOUT_MS=1000

# Client/server environment variables that could redirect our client calls
# or the servers somewhere else (e.g. MYSQL_PWD would break root login).
unset MYSQL_PWD MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_HISTFILE

# Everything we create (datadirs, env and secrets files) is private.
umask 077

# ------------------------------------------------------------- helpers ---

log() { printf 'mysql-sandbox: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: scripts/mysql-sandbox.sh up | down [--purge] | status | env | install
       scripts/mysql-sandbox.sh kill ROLE | stop ROLE | start ROLE | wipe master
  ROLE: master, replica, replica2, replica3
  env: KVGRPC_SANDBOX_DIR (default <repo>/.sandbox),
       KVGRPC_SANDBOX_PORT (master port, default 23306; replica N = port+N),
       KVGRPC_SANDBOX_REPLICAS (1..3, default 1)
EOF
    exit 2
}

# Find an executable by name in PATH and the usual system dirs (PATH of a
# non-root user often lacks /usr/sbin, where mariadbd lives).
find_bin() {
    local name=$1 dir
    local -a dirs
    IFS=: read -r -a dirs <<<"${PATH:-}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for dir in "${dirs[@]}"; do
        if [[ -n $dir && -f $dir/$name && -x $dir/$name ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    return 1
}

# Resolve MARIADBD, INSTALL_DB, MARIADB, MARIADB_ADMIN; return 1 if any is missing.
resolve_bins() {
    MARIADBD=$(find_bin mariadbd) || return 1
    INSTALL_DB=$(find_bin mariadb-install-db) || return 1
    MARIADB=$(find_bin mariadb) || return 1
    MARIADB_ADMIN=$(find_bin mariadb-admin) || return 1
}

# Make sure the MariaDB binaries exist; install them with apt if we are root.
# Only installs when missing: an existing system server is never touched.
ensure_bins() {
    resolve_bins && return 0
    local pkgs=(mariadb-server mariadb-client)
    if [[ $(id -u) -ne 0 ]]; then
        die "MariaDB binaries (mariadbd, mariadb-install-db, mariadb, mariadb-admin) not found;" \
            "install them, e.g.: sudo apt-get install -y --no-install-recommends ${pkgs[*]}"
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "MariaDB binaries not found and apt-get is unavailable; install ${pkgs[*]}"
    log "MariaDB binaries not found; installing ${pkgs[*]} with apt-get"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2
    resolve_bins || die "MariaDB binaries still missing after installing ${pkgs[*]}"
}

# Set ROLES / REPLICA_ROLES from REPLICAS.
set_roles() {
    ROLES=("${ALL_ROLES[@]:0:REPLICAS + 1}")
    REPLICA_ROLES=("${ALL_ROLES[@]:1:REPLICAS}")
}

# Per-server paths. $1 is a role: master, replica, replica2 or replica3.
role_dir() { printf '%s/%s\n' "$SANDBOX_DIR" "$1"; }
cnf_of()   { printf '%s/my.cnf\n' "$(role_dir "$1")"; }
sock_of()  { printf '%s/mysqld.sock\n' "$(role_dir "$1")"; }
pidf_of()  { printf '%s/mysqld.pid\n' "$(role_dir "$1")"; }
elog_of()  { printf '%s/error.log\n' "$(role_dir "$1")"; }
# 0 for the master, N for replicaN (1 for replica).
role_index() {
    case $1 in
        master) echo 0 ;;
        replica) echo 1 ;;
        replica[2-9]) echo "${1#replica}" ;;
        *) die "unknown role '$1'" ;;
    esac
}
port_of()      { echo "$((MASTER_PORT + $(role_index "$1")))"; }
server_id_of() { echo "$(($(role_index "$1") + 1))"; }
# Prefix of the role's keys in <dir>/env: KVGRPC_SANDBOX_MASTER, ..._REPLICA2.
env_prefix()   { printf 'KVGRPC_SANDBOX_%s\n' "${1^^}"; }

# Run SQL as root over the unix socket of server $1; SQL comes from stdin
# (keeps passwords out of `ps`) or from extra args such as -e.
sql() {
    local role=$1
    shift
    "$MARIADB" --no-defaults --protocol=SOCKET --socket="$(sock_of "$role")" \
        --user=root --connect-timeout=5 --batch --skip-column-names "$@"
}

# Value of global status variable $2 of server $1 (e.g. Rpl_semi_sync_master_status).
global_status() { sql "$1" -e "SHOW GLOBAL STATUS LIKE '$2'" | cut -f2; }

# 24 hex characters of /dev/urandom.
random_password() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }

# Is $1 a live, non-zombie process? (A dead server can linger as a zombie
# until init reaps it, and kill -0 succeeds on zombies.)
pid_alive() {
    local state
    [[ -e /proc/$1 ]] || return 1 # not kill -0: that fails with EPERM on others' processes
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# Is $2 a live (non-zombie) process that is *our* mariadbd for role $1?
# Guards against stale pid files whose PID got reused by something else.
is_our_server() {
    local role=$1 pid=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"--defaults-file=$(cnf_of "$role") "* ]]
}

# Print the PID of role $1 if it is running, else return 1.
running_pid() {
    local role=$1 pidf pid
    pidf=$(pidf_of "$role")
    [[ -f $pidf ]] || return 1
    pid=$(<"$pidf") || return 1
    pid=${pid//[[:space:]]/}
    is_our_server "$role" "$pid" || return 1
    printf '%s\n' "$pid"
}

# Stop our server $2 (PID) of role $1: TERM, wait up to $TIMEOUT s, then KILL.
stop_pid() {
    local role=$1 pid=$2 i
    is_our_server "$role" "$pid" || return 0
    log "stopping $role (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        is_our_server "$role" "$pid" || return 0
        sleep 0.1
    done
    log "$role (pid $pid) did not stop within ${TIMEOUT}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        is_our_server "$role" "$pid" || { rm -f -- "$(pidf_of "$role")"; return 0; }
        sleep 0.1
    done
    die "could not kill $role (pid $pid)"
}

stop_role() {
    local role=$1 pid
    if pid=$(running_pid "$role"); then
        stop_pid "$role" "$pid"
    fi
}

# Print the last lines of role $1's error log to stderr.
show_log_tail() {
    local elog
    elog=$(elog_of "$1")
    if [[ -s $elog ]]; then
        log "last lines of $elog:"
        tail -n 25 -- "$elog" | sed 's/^/    /' >&2
    fi
}

has_marker() { [[ -f $SANDBOX_DIR/$MARKER_NAME ]]; }

# Create the sandbox dir (or adopt an empty one) and mark it as ours. Refuse to
# use a non-empty directory the script did not create.
claim_dir() {
    mkdir -p -- "$SANDBOX_DIR"
    if ! has_marker; then
        if [[ -n $(ls -A -- "$SANDBOX_DIR") ]]; then
            die "$SANDBOX_DIR exists, is not empty and was not created by this script; refusing to use it"
        fi
        echo "created by scripts/mysql-sandbox.sh; safe to delete when the servers are down" \
            >"$SANDBOX_DIR/$MARKER_NAME"
    fi
    # Keep the sandbox out of git without touching the repo's .gitignore.
    [[ -f $SANDBOX_DIR/.gitignore ]] || echo '*' >"$SANDBOX_DIR/.gitignore"
}

# Delete everything in the sandbox dir except the marker and .gitignore.
# Callers must have checked the marker.
wipe_dir() {
    has_marker || die "refusing to wipe $SANDBOX_DIR: marker file missing"
    find "$SANDBOX_DIR" -mindepth 1 -maxdepth 1 \
        ! -name "$MARKER_NAME" ! -name .gitignore -exec rm -rf -- {} +
}

# Serialise up/down/fault commands on the sandbox dir itself (fd 9), so
# parallel callers (e.g. test workers) don't race. The dir is never removed
# while locked except by --purge. Every long-lived child must close fd 9
# (`9<&-`), or it would keep the lock held after we exit.
lock_dir() {
    command -v flock >/dev/null 2>&1 || return 0
    exec 9<"$SANDBOX_DIR"
    if ! flock -n 9; then
        log "waiting for another mysql-sandbox.sh operation on $SANDBOX_DIR"
        flock -w 120 9 || die "timed out waiting for the lock on $SANDBOX_DIR"
    fi
}

validate_config() {
    [[ $MASTER_PORT =~ ^[0-9]{1,5}$ ]] || die "KVGRPC_SANDBOX_PORT must be a number, got '$MASTER_PORT'"
    MASTER_PORT=$((10#$MASTER_PORT))
    [[ $REPLICAS =~ ^[0-9]{1,2}$ ]] || REPLICAS=x
    if [[ $REPLICAS == x ]] || ((10#$REPLICAS < 1 || 10#$REPLICAS > MAX_REPLICAS)); then
        die "KVGRPC_SANDBOX_REPLICAS must be 1..$MAX_REPLICAS, got '${KVGRPC_SANDBOX_REPLICAS:-}'"
    fi
    REPLICAS=$((10#$REPLICAS))
    ((MASTER_PORT >= 1024 && MASTER_PORT + REPLICAS < 32768)) ||
        die "KVGRPC_SANDBOX_PORT must be in 1024..$((32767 - REPLICAS))" \
            "(replicas use port+1..port+$REPLICAS, all below 32768)"
    set_roles
    [[ $SANDBOX_DIR == /* ]] || SANDBOX_DIR=$PWD/$SANDBOX_DIR
    SANDBOX_DIR=${SANDBOX_DIR%/}
    [[ -n $SANDBOX_DIR && $SANDBOX_DIR != "${HOME:-}" && $SANDBOX_DIR != "$REPO_DIR" ]] ||
        die "refusing to use '$SANDBOX_DIR' as sandbox dir"
    # Unix socket paths are limited to 107 bytes (the last role's is the longest).
    local sock
    sock=$(sock_of "${ROLES[-1]}")
    ((${#sock} <= 107)) || die "socket path $sock is too long; set a shorter KVGRPC_SANDBOX_DIR"
}

# For every command but `up`: an existing sandbox keeps the port and replica
# count it was created with, whatever the environment says now.
adopt_recorded_config() {
    local n port
    n=$(env_value KVGRPC_SANDBOX_REPLICAS)
    port=$(env_value KVGRPC_SANDBOX_MASTER_PORT)
    if [[ $n =~ ^[1-9]$ ]] && ((n <= MAX_REPLICAS)); then REPLICAS=$n; fi
    if [[ $port =~ ^[0-9]{1,5}$ ]]; then MASTER_PORT=$((10#$port)); fi
    set_roles
}

# True if something already accepts TCP connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- my.cnf ---

write_cnf() {
    local role=$1 dir datadir port
    dir=$(role_dir "$role")
    datadir=$dir/data
    port=$(port_of "$role")
    mkdir -p -- "$datadir" "$dir/tmp"
    {
        cat <<EOF
# Generated by scripts/mysql-sandbox.sh -- do not edit; recreated by 'up'.
# Only this file is read (--defaults-file); /etc/mysql is ignored.
[mysqld]
datadir              = $datadir
socket               = $(sock_of "$role")
pid-file             = $(pidf_of "$role")
log-error            = $(elog_of "$role")
# Private tmpdir: at start-up mariadbd deletes every '#sql*' file in its
# tmpdir, so sharing /tmp would delete temporary tables of other servers
# (the other sandbox servers, or the system MariaDB).
tmpdir               = $dir/tmp
port                 = $port
bind-address         = 127.0.0.1
skip-name-resolve

max_connections      = 300
innodb_buffer_pool_size = 256M
max_allowed_packet   = 64M
local_infile         = 1
character-set-server = utf8mb4

# Durability: every commit is fsynced to the redo log and the binlog.
innodb_flush_log_at_trx_commit = 1
sync_binlog          = 1

binlog_format        = ROW
server_id            = $(server_id_of "$role")

# Semi-synchronous replication (built into MariaDB >= 10.3, no plugin). On
# the master a commit returns only once a replica has acknowledged receiving
# its events; AFTER_SYNC waits after the binlog fsync and before the engine
# commit, so no other session sees a transaction that no replica has. After
# rpl_semi_sync_master_timeout ms without an ack the master falls back to
# asynchronous replication until a replica has caught up again.
rpl_semi_sync_master_enabled    = ON
rpl_semi_sync_master_timeout    = $SEMISYNC_TIMEOUT_MS
rpl_semi_sync_master_wait_point = AFTER_SYNC
EOF
        if [[ $role == master ]]; then
            cat <<EOF
# (The default.) Also without any replica connected, e.g. after all were
# killed, a commit waits the full timeout once before falling back.
rpl_semi_sync_master_wait_no_slave = ON

log_bin              = $datadir/master-bin
EOF
        else
            cat <<EOF
# The master settings above are there so that a promoted replica acts as a
# semi-sync master at once. While it is a replica they must not cost
# anything: with the default wait_no_slave=ON the first transaction the SQL
# thread applies after every start would wait the full timeout for an ack
# from replicas of this replica that do not exist (measured on 10.11). With
# OFF a master without semi-sync replicas never waits -- unlike the sandbox
# master (ON), which waits the timeout once when its last replica is gone; a
# promotion may SET GLOBAL rpl_semi_sync_master_wait_no_slave=ON.
rpl_semi_sync_master_wait_no_slave = OFF
# This server acknowledges the events it receives from its master.
rpl_semi_sync_slave_enabled     = ON

log_bin              = $datadir/$role-bin
log_slave_updates    = 1
read_only            = 1
relay_log            = $datadir/relay-bin
relay_log_index      = $datadir/relay-bin.index
# Shown by SHOW SLAVE HOSTS on the master.
report_host          = 127.0.0.1
report_port          = $port
EOF
        fi
        cat <<EOF

# For manual poking: mariadb --defaults-file=$(cnf_of "$role")
[client]
socket               = $(sock_of "$role")
user                 = root
EOF
    } >"$(cnf_of "$role")"
}

# Arguments needed when running as uid 0 (mariadbd refuses to run as root
# unless told --user=root explicitly).
USER_ARGS=()
[[ $(id -u) -ne 0 ]] || USER_ARGS=(--user=root)

install_db() {
    local role=$1
    # --defaults-file must be the first option.
    if ! "$INSTALL_DB" --defaults-file="$(cnf_of "$role")" "${USER_ARGS[@]}" \
        --auth-root-authentication-method=normal --skip-test-db \
        --skip-name-resolve --force \
        </dev/null >"$(role_dir "$role")/install.log" 2>&1 9<&-; then
        log "mariadb-install-db failed:"
        sed 's/^/    /' "$(role_dir "$role")/install.log" >&2
        show_log_tail "$role"
        die "mariadb-install-db failed"
    fi
}

declare -A STARTED_PIDS=()
declare -A LOG_OFFSETS=()

# Start mariadbd for role $1 in the background, detached from this script:
# own session (setsid), no inherited stdin/stdout/stderr (a caller doing
# "$(... up)" would otherwise hang until the server exits) and no lock fd.
start_server() {
    local role=$1 elog
    local -a argv=("$MARIADBD" --defaults-file="$(cnf_of "$role")" "${USER_ARGS[@]}")
    if command -v setsid >/dev/null 2>&1; then
        argv=(setsid "${argv[@]}")
    fi
    # Where this start's messages begin in the (appended-to) error log.
    elog=$(elog_of "$role")
    LOG_OFFSETS[$role]=$(stat -c %s -- "$elog" 2>/dev/null || echo 0)
    "${argv[@]}" </dev/null >>"$elog" 2>&1 9<&- &
    STARTED_PIDS[$role]=$!
}

# Wait until role $1 answers ping on its socket; bounded by $TIMEOUT.
wait_for_server() {
    local role=$1 pid=${STARTED_PIDS[$1]} deadline=$((SECONDS + TIMEOUT))
    until "$MARIADB_ADMIN" --no-defaults --protocol=SOCKET --socket="$(sock_of "$role")" \
        --user=root --connect-timeout=1 ping >/dev/null 2>&1; do
        if ! pid_alive "$pid"; then
            show_log_tail "$role"
            # Someone took the port between our check and mariadbd's bind().
            if tail -c +"$((${LOG_OFFSETS[$role]:-0} + 1))" -- "$(elog_of "$role")" 2>/dev/null |
                grep -q 'Address already in use'; then
                die "$role mariadbd could not listen on 127.0.0.1:$(port_of "$role"): the port is in use by another process"
            fi
            die "$role mariadbd exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$role"
            die "$role did not accept connections within ${TIMEOUT}s"
        fi
        sleep 0.05
    done
}

# Fail with a clear message if role $1's port is taken (by anything: our
# own servers are known to be down when this is called).
check_port_free() {
    local port
    port=$(port_of "$1")
    if port_in_use "$port"; then
        die "cannot start $1: port $port on 127.0.0.1 is already in use by another process" \
            "(free it, or for 'up' set KVGRPC_SANDBOX_PORT)"
    fi
}

# Print field $2 of `SHOW SLAVE STATUS` output given in $1 (vertical format).
slave_field() {
    awk -v key="$2" '{ k = $1; sub(/:$/, "", k) }
        k == key { sub(/^[^:]*: ?/, ""); print; exit }' <<<"$1"
}

# SHOW SLAVE STATUS of replica $1.
# (--column-names: vertical output without names would be useless.)
slave_status() { sql "$1" --vertical --column-names -e 'SHOW SLAVE STATUS' 2>/dev/null; }

# Log replica $1's replication errors and error log tail.
show_replication_errors() {
    local role=$1 st=$2
    log "$role Last_IO_Error: $(slave_field "$st" Last_IO_Error)"
    log "$role Last_SQL_Error: $(slave_field "$st" Last_SQL_Error)"
    show_log_tail "$role"
}

# Wait until replica $1 has applied the master's binlog up to $2 and both
# replication threads run.
wait_for_replication() {
    local role=$1 pos=$2 deadline=$((SECONDS + TIMEOUT)) st io sqlr res
    while :; do
        res=$(sql "$role" -e "SELECT MASTER_GTID_WAIT('$pos', 1)") || {
            show_log_tail "$role"
            die "querying $role failed"
        }
        st=$(slave_status "$role") || st=
        io=$(slave_field "$st" Slave_IO_Running)
        sqlr=$(slave_field "$st" Slave_SQL_Running)
        if [[ $res == 0 && $io == Yes && $sqlr == Yes ]]; then
            return 0
        fi
        # A stopped thread (No) won't recover by itself: fail at once. While
        # the IO thread is still "Connecting" it retries every second.
        if [[ $io == No || $sqlr == No ]] || ((SECONDS >= deadline)); then
            log "$role not in sync (gtid wait=$res IO=$io SQL=$sqlr)"
            show_replication_errors "$role" "$st"
            die "$role did not catch up with master position $pos"
        fi
        sleep 0.05
    done
}

# Wait until all replicas are connected to the master as semi-sync replicas
# (Rpl_semi_sync_master_clients). Fails at once if an IO thread has stopped.
wait_for_semisync_replicas() {
    local deadline=$((SECONDS + TIMEOUT)) clients role st
    while :; do
        clients=$(global_status master Rpl_semi_sync_master_clients) || clients=
        if [[ $clients =~ ^[0-9]+$ ]] && ((clients >= REPLICAS)); then
            return 0
        fi
        for role in "${REPLICA_ROLES[@]}"; do
            st=$(slave_status "$role") || st=
            if [[ $(slave_field "$st" Slave_IO_Running) == No ]]; then
                show_replication_errors "$role" "$st"
                die "$role's replication IO thread stopped"
            fi
        done
        if ((SECONDS >= deadline)); then
            show_log_tail master
            die "only ${clients:-?} of $REPLICAS replicas connected to the master as semi-sync replicas within ${TIMEOUT}s"
        fi
        sleep 0.05
    done
}

# Wait until global status variable $2 of server $1 is $3; bounded by $TIMEOUT.
wait_for_status() {
    local role=$1 var=$2 want=$3 deadline=$((SECONDS + TIMEOUT)) got
    while :; do
        got=$(global_status "$role" "$var") || got=
        [[ $got != "$want" ]] || return 0
        if ((SECONDS >= deadline)); then
            show_log_tail "$role"
            die "$role: $var is '${got:-?}', not $want after ${TIMEOUT}s"
        fi
        sleep 0.05
    done
}

# GTIDs of position $1 (a D-S-N,... list) in domains where position $2 is
# behind or absent, comma-separated; empty if $1 is not ahead of $2 anywhere.
gtid_ahead() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        gsub(/[[:space:]]/, "", a); gsub(/[[:space:]]/, "", b)
        n = split(b, list, ",")
        for (i = 1; i <= n; i++) if (split(list[i], g, "-") == 3) seq[g[1]] = g[3]
        n = split(a, list, ",")
        for (i = 1; i <= n; i++)
            if (split(list[i], g, "-") == 3 && (!(g[1] in seq) || g[3] + 0 > seq[g[1]] + 0))
                out = out (out == "" ? "" : ",") list[i]
        print out
    }'
}

# ------------------------------------------------------------ accounts ---

# SQL for the replication account. Created on every server separately (with
# sql_log_bin=0) before replication starts, so that the replicas can connect
# before the master binlogs anything: a semi-sync master without connected
# replicas makes its first commit wait the full semi-sync timeout.
repl_account_sql() {
    cat <<EOF
CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '$1';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
EOF
}

# SQL for the kvgrpc database and the application ($1) and admin ($2) accounts.
app_accounts_sql() {
    cat <<EOF
-- root keeps only the unix socket (install-db also opened it on 127.0.0.1 and ::1).
DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';
CREATE DATABASE kvgrpc CHARACTER SET utf8mb4;
CREATE USER 'kvgrpc'@'127.0.0.1' IDENTIFIED BY '$1';
CREATE USER 'kvgrpc'@'localhost' IDENTIFIED BY '$1';
GRANT ALL PRIVILEGES ON \`kvgrpc\`.* TO 'kvgrpc'@'127.0.0.1', 'kvgrpc'@'localhost';
-- Observing replication: SHOW MASTER STATUS / binlog positions (BINLOG MONITOR,
-- formerly REPLICATION CLIENT), SHOW SLAVE STATUS (SLAVE MONITOR, alias
-- REPLICA MONITOR), SHOW PROCESSLIST of other users (PROCESS); Watch reads the
-- master's binlog as a replica does (REPLICATION SLAVE).
GRANT BINLOG MONITOR, SLAVE MONITOR, PROCESS, REPLICATION SLAVE ON *.* TO 'kvgrpc'@'127.0.0.1', 'kvgrpc'@'localhost';
-- Administration (restores, fault tests): everything.
CREATE USER 'kvgrpc_admin'@'127.0.0.1' IDENTIFIED BY '$2';
CREATE USER 'kvgrpc_admin'@'localhost' IDENTIFIED BY '$2';
GRANT ALL PRIVILEGES ON *.* TO 'kvgrpc_admin'@'127.0.0.1', 'kvgrpc_admin'@'localhost' WITH GRANT OPTION;
EOF
}

# ----------------------------------------------------------------- env ---

env_file() { printf '%s/env\n' "$SANDBOX_DIR"; }
secrets_file() { printf '%s/secrets\n' "$SANDBOX_DIR"; }

print_urls() { grep -E '^KVGRPC_(MASTER|REPLICA)_URL=' "$(env_file)"; }

# Value of KEY in the env file (empty if absent).
env_value() { [[ ! -f $(env_file) ]] || sed -n "s/^$1=//p" "$(env_file)" | head -n 1; }

# Value of KEY in the secrets file (empty if absent).
secret_value() { [[ ! -f $(secrets_file) ]] || sed -n "s/^$1=//p" "$(secrets_file)" | head -n 1; }

# Write stdin to file $1 atomically, mode 600.
write_private() {
    local tmp=$1.tmp
    cat >"$tmp"
    chmod 600 "$tmp"
    mv -f -- "$tmp" "$1"
}

# URL of user $1 (password $2) on role $3.
db_url() { printf 'mysql://%s:%s@127.0.0.1:%s/kvgrpc\n' "$1" "$2" "$(port_of "$3")"; }

# Comma-separated URLs of user $1 (password $2) on all replicas, first first.
replica_urls() {
    local role urls=
    for role in "${REPLICA_ROLES[@]}"; do
        urls+=${urls:+,}$(db_url "$1" "$2" "$role")
    done
    printf '%s\n' "$urls"
}

# The passwords, for `wipe master` to re-create the same accounts.
write_secrets() {
    write_private "$(secrets_file)" <<EOF
# Passwords of the sandbox accounts; read by 'wipe master'.
KVGRPC_SANDBOX_APP_PASSWORD=$1
KVGRPC_SANDBOX_ADMIN_PASSWORD=$2
KVGRPC_SANDBOX_REPL_PASSWORD=$3
EOF
}

write_env() {
    local app_pw=$1 admin_pw=$2 role
    {
        printf 'KVGRPC_MASTER_URL=%s\n' "$(db_url kvgrpc "$app_pw" master)"
        printf 'KVGRPC_REPLICA_URL=%s\n' "$(replica_urls kvgrpc "$app_pw")"
        for role in "${ROLES[@]}"; do
            printf '%s_SOCKET=%q\n' "$(env_prefix "$role")" "$(sock_of "$role")"
        done
        for role in "${ROLES[@]}"; do
            printf '%s_PID=%s\n' "$(env_prefix "$role")" "$(running_pid "$role")"
        done
        for role in "${ROLES[@]}"; do
            printf '%s_PORT=%s\n' "$(env_prefix "$role")" "$(port_of "$role")"
        done
        printf 'KVGRPC_SANDBOX_REPLICAS=%s\n' "$REPLICAS"
        printf 'KVGRPC_ADMIN_MASTER_URL=%s\n' "$(db_url kvgrpc_admin "$admin_pw" master)"
        printf 'KVGRPC_ADMIN_REPLICA_URL=%s\n' "$(replica_urls kvgrpc_admin "$admin_pw")"
    } | write_private "$(env_file)"
}

# Rewrite the KVGRPC_SANDBOX_<ROLE>_PID lines of the env file with the
# current PIDs (empty for a server that is down); leaves the rest alone.
refresh_env_pids() {
    local f old line role key
    f=$(env_file)
    [[ -f $f ]] || return 0
    old=$(<"$f")
    while IFS= read -r line; do
        for role in "${ROLES[@]}"; do
            key=$(env_prefix "$role")_PID
            if [[ $line == "$key="* ]]; then
                line=$key=$(running_pid "$role" || true)
                break
            fi
        done
        printf '%s\n' "$line"
    done <<<"$old" | write_private "$f"
}

# All servers of the recorded sandbox running and the env file written by a
# completed `up`.
sandbox_up() {
    local n role
    [[ -f $(env_file) ]] || return 1
    n=$(env_value KVGRPC_SANDBOX_REPLICAS)
    [[ $n =~ ^[1-9]$ ]] && ((n <= MAX_REPLICAS)) || n=1
    for role in "${ALL_ROLES[@]:0:n + 1}"; do
        running_pid "$role" >/dev/null || return 1
    done
}

# For the fault commands: the sandbox must have been set up and $1 must be
# one of its roles.
require_role() {
    local role=$1 r
    if [[ ! -d $SANDBOX_DIR ]] || ! has_marker; then
        die "no sandbox in $SANDBOX_DIR (run: scripts/mysql-sandbox.sh up)"
    fi
    [[ -f $(env_file) ]] ||
        die "the sandbox in $SANDBOX_DIR was never completely set up (no env file); run up"
    for r in "${ROLES[@]}"; do
        if [[ $r == "$role" ]]; then
            [[ -f $(cnf_of "$role") ]] || die "$role has no config in $SANDBOX_DIR"
            return 0
        fi
    done
    die "unknown role '$role'; this sandbox has: ${ROLES[*]}"
}

# ------------------------------------------------------------ commands ---

OP=
OP_DONE=0

# If `up` (or start / wipe) fails half-way, don't leave orphan servers behind.
cleanup_failed_op() {
    local rc=$? i role
    ((OP_DONE)) && return 0
    for ((i = ${#ALL_ROLES[@]} - 1; i >= 0; i--)); do
        role=${ALL_ROLES[i]}
        if [[ -n ${STARTED_PIDS[$role]:-} ]]; then
            stop_pid "$role" "${STARTED_PIDS[$role]}" || true
            stop_role "$role" || true
        fi
    done
    log "$OP failed (exit $rc); logs are in $SANDBOX_DIR"
}

cmd_up() {
    claim_dir
    lock_dir

    if sandbox_up; then
        if [[ $(env_value KVGRPC_SANDBOX_MASTER_PORT) != "$MASTER_PORT" ]]; then
            die "sandbox in $SANDBOX_DIR already runs on port $(env_value KVGRPC_SANDBOX_MASTER_PORT);" \
                "run 'down' first to change KVGRPC_SANDBOX_PORT"
        fi
        local recorded
        recorded=$(env_value KVGRPC_SANDBOX_REPLICAS)
        if [[ ${recorded:-1} != "$REPLICAS" ]]; then
            die "sandbox in $SANDBOX_DIR already runs with ${recorded:-1} replica(s);" \
                "run 'down' first to change KVGRPC_SANDBOX_REPLICAS"
        fi
        log "already up ($SANDBOX_DIR)"
        print_urls
        return 0
    fi

    ensure_bins

    # Half-alive (a server died, or an interrupted up): stop what is left of
    # ours -- any role, also of an earlier sandbox with more replicas -- and
    # start over from nothing.
    local i role
    for ((i = ${#ALL_ROLES[@]} - 1; i >= 0; i--)); do
        stop_role "${ALL_ROLES[i]}"
    done

    for role in "${ROLES[@]}"; do
        if port_in_use "$(port_of "$role")"; then
            die "port $(port_of "$role") on 127.0.0.1 is already in use; set KVGRPC_SANDBOX_PORT"
        fi
    done

    OP=up
    trap cleanup_failed_op EXIT
    wipe_dir

    # 1. Initialise the master's datadir with mariadb-install-db, then clone
    #    it for each replica. A freshly bootstrapped datadir carries no server
    #    identity (server_id, binlog and GTID state come from my.cnf and from
    #    replication), so the copy is equivalent to another install-db run --
    #    mysql-test-run does the same. Measured on a 2-CPU box: install-db
    #    takes ~0.5 s alone, two in parallel often ~1.5 s; the sparse copy
    #    (the 96 MiB redo log is mostly zeros) takes ~0.1-0.2 s; the copies
    #    for several replicas run in parallel.
    for role in "${ROLES[@]}"; do write_cnf "$role"; done
    install_db master
    local -a cp_pids=()
    for role in "${REPLICA_ROLES[@]}"; do
        cp -a --sparse=always -- "$(role_dir master)/data/." "$(role_dir "$role")/data/" 9<&- &
        cp_pids+=($!)
    done
    for i in "${cp_pids[@]}"; do
        wait "$i" || die "copying the master's fresh datadir to a replica failed"
    done

    # 2. Start all servers and wait until they accept connections.
    for role in "${ROLES[@]}"; do start_server "$role"; done
    for role in "${ROLES[@]}"; do wait_for_server "$role"; done
    local ports=
    for role in "${REPLICA_ROLES[@]}"; do ports+=${ports:+, }$(port_of "$role"); done
    log "master up on 127.0.0.1:$(port_of master), replicas up on 127.0.0.1 port(s) $ports"

    # 3. The replication account, on every server without binlogging it (see
    #    repl_account_sql), then point each replica at the master (GTID, from
    #    the start of the binlog) and wait until all are connected as
    #    semi-sync replicas. (The servers are set up in parallel.)
    local app_pw admin_pw repl_pw
    app_pw=$(random_password)
    admin_pw=$(random_password)
    repl_pw=$(random_password)
    local -a sql_pids=()
    { echo 'SET sql_log_bin = 0;'; repl_account_sql "$repl_pw"; } | sql master 9<&- &
    sql_pids+=($!)
    for role in "${REPLICA_ROLES[@]}"; do
        {
            echo 'SET sql_log_bin = 0;'
            repl_account_sql "$repl_pw"
            cat <<EOF
CHANGE MASTER TO
    MASTER_HOST='127.0.0.1',
    MASTER_PORT=$(port_of master),
    MASTER_USER='repl',
    MASTER_PASSWORD='$repl_pw',
    MASTER_USE_GTID=slave_pos,
    MASTER_CONNECT_RETRY=1;
START SLAVE;
EOF
        } | sql "$role" 9<&- &
        sql_pids+=($!)
    done
    for i in "${sql_pids[@]}"; do
        wait "$i" || die "creating the replication account or starting replication failed"
    done
    wait_for_semisync_replicas

    # 4. Database and the other accounts, created on the running master so
    #    that they are binlogged and reach the replicas through (semi-sync)
    #    replication; wait until every replica has applied everything.
    app_accounts_sql "$app_pw" "$admin_pw" | sql master
    local pos
    pos=$(sql master -e 'SELECT @@GLOBAL.gtid_binlog_pos')
    for role in "${REPLICA_ROLES[@]}"; do wait_for_replication "$role" "$pos"; done

    # 5. Semi-sync must be active: on the master (it switches OFF if a commit
    #    timed out, and back ON once a replica has caught up) and on each
    #    replica's IO thread.
    wait_for_status master Rpl_semi_sync_master_status ON
    for role in "${REPLICA_ROLES[@]}"; do wait_for_status "$role" Rpl_semi_sync_slave_status ON; done
    log "replicas in sync with master at GTID $pos; semi-sync ON" \
        "(acknowledged transactions: $(global_status master Rpl_semi_sync_master_yes_tx))"

    # 6. Publish connection details.
    write_secrets "$app_pw" "$admin_pw" "$repl_pw"
    write_env "$app_pw" "$admin_pw"
    OP_DONE=1
    trap - EXIT
    log "env written to $(env_file)"
    print_urls
}

cmd_down() {
    local purge=0
    case ${1:-} in
        "") ;;
        --purge) purge=1 ;;
        *) usage ;;
    esac
    if [[ ! -d $SANDBOX_DIR ]]; then
        log "nothing to do: $SANDBOX_DIR does not exist"
        return 0
    fi
    has_marker || die "$SANDBOX_DIR was not created by this script; not touching it"
    lock_dir
    # Replicas first, then the master; every role, whatever the replica count.
    local i role stopped=0
    for ((i = ${#ALL_ROLES[@]} - 1; i >= 0; i--)); do
        role=${ALL_ROLES[i]}
        if running_pid "$role" >/dev/null; then
            stop_role "$role"
            stopped=1
        fi
    done
    ((stopped)) || log "no sandbox server was running"
    if ((purge)); then
        has_marker || die "marker vanished from $SANDBOX_DIR; not removing it"
        rm -rf -- "$SANDBOX_DIR"
        log "removed $SANDBOX_DIR"
    elif [[ -f $(env_file) ]]; then
        refresh_env_pids
    fi
}

cmd_status() {
    local role pid healthy=1
    for role in "${ROLES[@]}"; do
        if pid=$(running_pid "$role"); then
            printf '%-9s running (pid %s, 127.0.0.1:%s, socket %s)\n' \
                "$role:" "$pid" "$(port_of "$role")" "$(sock_of "$role")"
        else
            printf '%-9s not running\n' "$role:"
            healthy=0
        fi
    done
    [[ -n ${MARIADB:-} ]] || return 1
    if running_pid master >/dev/null; then
        local mst
        mst=$(global_status master Rpl_semi_sync_master_status 2>/dev/null) || mst=
        printf 'semi-sync master: Rpl_semi_sync_master_status=%s clients=%s yes_tx=%s no_tx=%s\n' \
            "${mst:-?}" \
            "$(global_status master Rpl_semi_sync_master_clients 2>/dev/null || true)" \
            "$(global_status master Rpl_semi_sync_master_yes_tx 2>/dev/null || true)" \
            "$(global_status master Rpl_semi_sync_master_no_tx 2>/dev/null || true)"
        [[ $mst == ON ]] || healthy=0
    fi
    for role in "${REPLICA_ROLES[@]}"; do
        running_pid "$role" >/dev/null || continue
        local st io sqlr sss e
        st=$(slave_status "$role" || true)
        io=$(slave_field "$st" Slave_IO_Running)
        sqlr=$(slave_field "$st" Slave_SQL_Running)
        sss=$(global_status "$role" Rpl_semi_sync_slave_status 2>/dev/null) || sss=
        printf 'replication %s: Slave_IO_Running=%s Slave_SQL_Running=%s Seconds_Behind_Master=%s Gtid_IO_Pos=%s Rpl_semi_sync_slave_status=%s\n' \
            "$role" "${io:-?}" "${sqlr:-?}" "$(slave_field "$st" Seconds_Behind_Master)" \
            "$(slave_field "$st" Gtid_IO_Pos)" "${sss:-?}"
        for e in Last_IO_Error Last_SQL_Error; do
            [[ -z $(slave_field "$st" "$e") ]] || printf '%s %s: %s\n' "$role" "$e" "$(slave_field "$st" "$e")"
        done
        [[ $io == Yes && $sqlr == Yes && $sss == ON ]] || healthy=0
        # A replica that has applied GTIDs its master does not have, e.g.
        # after `wipe master`: replication may look fine but has diverged.
        # (Replica first: the master only moves ahead in between.)
        local spos mpos ahead
        if running_pid master >/dev/null &&
            spos=$(sql "$role" -e 'SELECT @@GLOBAL.gtid_slave_pos' 2>/dev/null) &&
            mpos=$(sql master -e 'SELECT @@GLOBAL.gtid_binlog_pos' 2>/dev/null); then
            ahead=$(gtid_ahead "$spos" "$mpos")
            if [[ -n $ahead ]]; then
                printf '%s DIVERGED: has applied %s, beyond the master'"'"'s binlog (gtid_binlog_pos %s)\n' \
                    "$role" "$ahead" "${mpos:-empty}"
                healthy=0
            fi
        fi
    done
    ((healthy))
}

cmd_env() {
    sandbox_up || die "sandbox in $SANDBOX_DIR is not up (run: scripts/mysql-sandbox.sh up)"
    cat -- "$(env_file)"
}

# kill ROLE: SIGKILL, as a crash would; wait (bounded) until it is gone.
cmd_kill() {
    local role=$1 pid i
    require_role "$role"
    lock_dir
    if ! pid=$(running_pid "$role"); then
        log "$role is not running"
    else
        log "killing $role (pid $pid) with SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        # Gone, or a zombie (which holds no files or ports any more).
        for ((i = 0; i < TIMEOUT * 50; i++)); do
            is_our_server "$role" "$pid" || break
            sleep 0.02
        done
        ! is_our_server "$role" "$pid" || die "$role (pid $pid) still alive ${TIMEOUT}s after SIGKILL"
        # A killed server leaves its pid file (and socket) behind.
        rm -f -- "$(pidf_of "$role")"
    fi
    refresh_env_pids
}

# stop ROLE: clean shutdown.
cmd_stop() {
    local role=$1
    require_role "$role"
    lock_dir
    if running_pid "$role" >/dev/null; then
        stop_role "$role"
    else
        log "$role is not running"
    fi
    refresh_env_pids
}

# start ROLE: start a stopped server again on its datadir and config.
cmd_start() {
    local role=$1 pid
    require_role "$role"
    resolve_bins || die "MariaDB binaries not found (run: scripts/mysql-sandbox.sh install)"
    lock_dir
    if pid=$(running_pid "$role"); then
        log "$role is already running (pid $pid)"
        refresh_env_pids
        return 0
    fi
    if [[ ! -d $(role_dir "$role")/data/mysql ]]; then
        die "$role has no initialised datadir in $(role_dir "$role")/data" \
            "$([[ $role != master ]] || echo "(use 'wipe master' to create a blank one)")"
    fi
    check_port_free "$role"
    OP="start $role"
    trap cleanup_failed_op EXIT
    start_server "$role"
    wait_for_server "$role"
    OP_DONE=1
    trap - EXIT
    refresh_env_pids
    log "$role started (pid ${STARTED_PIDS[$role]}, 127.0.0.1:$(port_of "$role"))"
}

# wipe master: a blank master (accounts only) in place of a dead one.
cmd_wipe() {
    local role=$1 pid app_pw admin_pw repl_pw
    [[ $role == master ]] || die "wipe supports only the master, not '$role'"
    require_role master
    resolve_bins || die "MariaDB binaries not found (run: scripts/mysql-sandbox.sh install)"
    lock_dir
    if pid=$(running_pid master); then
        die "master is running (pid $pid); kill or stop it first"
    fi
    app_pw=$(secret_value KVGRPC_SANDBOX_APP_PASSWORD)
    admin_pw=$(secret_value KVGRPC_SANDBOX_ADMIN_PASSWORD)
    repl_pw=$(secret_value KVGRPC_SANDBOX_REPL_PASSWORD)
    [[ -n $app_pw && -n $admin_pw && -n $repl_pw ]] ||
        die "passwords missing from $(secrets_file) (sandbox made by an older version?); run down and up"
    check_port_free master

    OP="wipe master"
    trap cleanup_failed_op EXIT
    has_marker || die "refusing to wipe in $SANDBOX_DIR: marker file missing"
    log "destroying the master's datadir $(role_dir master)/data"
    rm -rf -- "$(role_dir master)/data"
    rm -f -- "$(pidf_of master)"
    mkdir -p -- "$(role_dir master)/data"
    install_db master
    start_server master
    wait_for_server master
    # Nothing of this is binlogged: the new master's binlog starts empty, as
    # on a freshly provisioned server.
    {
        echo 'SET sql_log_bin = 0;'
        repl_account_sql "$repl_pw"
        app_accounts_sql "$app_pw" "$admin_pw"
    } | sql master
    OP_DONE=1
    trap - EXIT
    refresh_env_pids
    log "master replaced by a blank server (pid ${STARTED_PIDS[master]}, 127.0.0.1:$(port_of master));" \
        "replicas untouched"
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd=$1
    shift
    case $cmd in
        up) [[ $# -eq 0 ]] || usage; validate_config; cmd_up ;;
        down) [[ $# -le 1 ]] || usage; validate_config; adopt_recorded_config; cmd_down "$@" ;;
        status) [[ $# -eq 0 ]] || usage; validate_config; adopt_recorded_config; resolve_bins || true; cmd_status ;;
        env) [[ $# -eq 0 ]] || usage; validate_config; cmd_env ;;
        install) [[ $# -eq 0 ]] || usage; ensure_bins; log "using $MARIADBD, $INSTALL_DB, $MARIADB, $MARIADB_ADMIN" ;;
        kill | stop | start | wipe)
            [[ $# -eq 1 ]] || usage
            validate_config
            adopt_recorded_config
            "cmd_$cmd" "$1"
            ;;
        *) usage ;;
    esac
}

main "$@"
