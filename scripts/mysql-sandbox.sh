#!/usr/bin/env bash
# mysql-sandbox.sh -- throw-away MariaDB master + GTID read replica for kvgrpc.
#
# Usage: scripts/mysql-sandbox.sh up | down [--purge] | status | env | install
#
#   up      Create (from nothing) and start a master and a replica on
#           127.0.0.1, wait until the replica has caught up, write
#           <dir>/env and print the two connection URLs on stdout, so that
#               eval "$(scripts/mysql-sandbox.sh up)"
#           sets KVGRPC_MASTER_URL / KVGRPC_REPLICA_URL (not exported).
#           If the sandbox is already running, just prints them again.
#   down    Stop both servers (by the PIDs in their pid files only).
#           --purge also removes the sandbox directory.
#   status  Show whether each server runs and the replica's thread states.
#           Exit 0 only if both run and replication is healthy.
#   env     Print <dir>/env if the sandbox is up, else exit 1.
#   install Only make sure the MariaDB binaries exist (apt-get install of
#           mariadb-server and mariadb-client, as root, only where missing;
#           `up` does the same). Used by scripts/test.sh.
#
# Environment:
#   KVGRPC_SANDBOX_DIR   sandbox directory (default: <repo>/.sandbox)
#   KVGRPC_SANDBOX_PORT  master TCP port (default 23306); replica uses port+1.
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

# Written into the sandbox dir; we only ever delete a directory holding it.
MARKER_NAME=.kvgrpc-mysql-sandbox
# How long (seconds) to wait for start-up, replication and shutdown.
TIMEOUT=30

# Client/server environment variables that could redirect our client calls
# or the servers somewhere else (e.g. MYSQL_PWD would break root login).
unset MYSQL_PWD MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_HISTFILE

# Everything we create (datadirs, env file with passwords) is private.
umask 077

# ------------------------------------------------------------- helpers ---

log() { printf 'mysql-sandbox: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: scripts/mysql-sandbox.sh up | down [--purge] | status | env | install
  env: KVGRPC_SANDBOX_DIR (default <repo>/.sandbox),
       KVGRPC_SANDBOX_PORT (master port, default 23306; replica = port+1)
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

# Per-server paths. $1 is "master" or "replica".
role_dir() { printf '%s/%s\n' "$SANDBOX_DIR" "$1"; }
cnf_of()   { printf '%s/my.cnf\n' "$(role_dir "$1")"; }
sock_of()  { printf '%s/mysqld.sock\n' "$(role_dir "$1")"; }
pidf_of()  { printf '%s/mysqld.pid\n' "$(role_dir "$1")"; }
elog_of()  { printf '%s/error.log\n' "$(role_dir "$1")"; }
port_of()  { if [[ $1 == master ]]; then echo "$MASTER_PORT"; else echo "$((MASTER_PORT + 1))"; fi; }

# Run SQL as root over the unix socket of server $1; SQL comes from stdin
# (keeps passwords out of `ps`) or from extra args such as -e.
sql() {
    local role=$1
    shift
    "$MARIADB" --no-defaults --protocol=SOCKET --socket="$(sock_of "$role")" \
        --user=root --connect-timeout=5 --batch --skip-column-names "$@"
}

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

# Serialise up/down on the sandbox dir itself (fd 9), so parallel callers
# (e.g. test workers) don't race. The dir is never removed while locked except
# by --purge. Every long-lived child must close fd 9 (`9<&-`), or it would keep
# the lock held after we exit.
lock_dir() {
    command -v flock >/dev/null 2>&1 || return 0
    exec 9<"$SANDBOX_DIR"
    if ! flock -n 9; then
        log "waiting for another mysql-sandbox.sh operation on $SANDBOX_DIR"
        flock -w 120 9 || die "timed out waiting for the lock on $SANDBOX_DIR"
    fi
}

validate_config() {
    [[ $MASTER_PORT =~ ^[0-9]+$ ]] || die "KVGRPC_SANDBOX_PORT must be a number, got '$MASTER_PORT'"
    MASTER_PORT=$((10#$MASTER_PORT))
    ((MASTER_PORT >= 1024 && MASTER_PORT + 1 < 32768)) ||
        die "KVGRPC_SANDBOX_PORT must be in 1024..32766 (replica uses port+1, both below 32768)"
    [[ $SANDBOX_DIR == /* ]] || SANDBOX_DIR=$PWD/$SANDBOX_DIR
    SANDBOX_DIR=${SANDBOX_DIR%/}
    [[ -n $SANDBOX_DIR && $SANDBOX_DIR != "${HOME:-}" && $SANDBOX_DIR != "$REPO_DIR" ]] ||
        die "refusing to use '$SANDBOX_DIR' as sandbox dir"
    # Unix socket paths are limited to 107 bytes.
    local sock
    sock=$(sock_of replica)
    ((${#sock} <= 107)) || die "socket path $sock is too long; set a shorter KVGRPC_SANDBOX_DIR"
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
# (the other sandbox server, or the system MariaDB).
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
EOF
        if [[ $role == master ]]; then
            cat <<EOF
server_id            = 1
log_bin              = $datadir/master-bin
EOF
        else
            cat <<EOF
server_id            = 2
log_bin              = $datadir/replica-bin
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
    "$INSTALL_DB" --defaults-file="$(cnf_of "$role")" "${USER_ARGS[@]}" \
        --auth-root-authentication-method=normal --skip-test-db \
        --skip-name-resolve --force \
        </dev/null >"$(role_dir "$role")/install.log" 2>&1 9<&-
}

# Start mariadbd for role $1 in the background, detached from this script:
# own session (setsid), no inherited stdin/stdout/stderr (a caller doing
# "$(... up)" would otherwise hang until the server exits) and no lock fd.
start_server() {
    local role=$1
    local -a argv=("$MARIADBD" --defaults-file="$(cnf_of "$role")" "${USER_ARGS[@]}")
    if command -v setsid >/dev/null 2>&1; then
        argv=(setsid "${argv[@]}")
    fi
    "${argv[@]}" </dev/null >>"$(elog_of "$role")" 2>&1 9<&- &
    STARTED_PIDS[$role]=$!
}

# Wait until role $1 answers ping on its socket; bounded by $TIMEOUT.
wait_for_server() {
    local role=$1 pid=${STARTED_PIDS[$1]} deadline=$((SECONDS + TIMEOUT))
    until "$MARIADB_ADMIN" --no-defaults --protocol=SOCKET --socket="$(sock_of "$role")" \
        --user=root --connect-timeout=1 ping >/dev/null 2>&1; do
        if ! pid_alive "$pid"; then
            show_log_tail "$role"
            die "$role mariadbd exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$role"
            die "$role did not accept connections within ${TIMEOUT}s"
        fi
        sleep 0.05
    done
}

# Print field $2 of `SHOW SLAVE STATUS` output given in $1 (vertical format).
slave_field() {
    awk -v key="$2" '{ k = $1; sub(/:$/, "", k) }
        k == key { sub(/^[^:]*: ?/, ""); print; exit }' <<<"$1"
}

# (--column-names: vertical output without names would be useless.)
slave_status() { sql replica --vertical --column-names -e 'SHOW SLAVE STATUS' 2>/dev/null; }

# Wait until the replica has applied the master's binlog up to $1 and both
# replication threads run.
wait_for_replication() {
    local pos=$1 deadline=$((SECONDS + TIMEOUT)) st io sqlr res
    while :; do
        res=$(sql replica -e "SELECT MASTER_GTID_WAIT('$pos', 1)") || {
            show_log_tail replica
            die "querying the replica failed"
        }
        st=$(slave_status) || st=
        io=$(slave_field "$st" Slave_IO_Running)
        sqlr=$(slave_field "$st" Slave_SQL_Running)
        if [[ $res == 0 && $io == Yes && $sqlr == Yes ]]; then
            return 0
        fi
        # A stopped thread (No) won't recover by itself: fail at once. While
        # the IO thread is still "Connecting" it retries every second.
        if [[ $io == No || $sqlr == No ]] || ((SECONDS >= deadline)); then
            log "replica not in sync (gtid wait=$res IO=$io SQL=$sqlr)"
            log "Last_IO_Error: $(slave_field "$st" Last_IO_Error)"
            log "Last_SQL_Error: $(slave_field "$st" Last_SQL_Error)"
            show_log_tail replica
            die "replication did not catch up with master position $pos"
        fi
        sleep 0.05
    done
}

# ----------------------------------------------------------------- env ---

env_file() { printf '%s/env\n' "$SANDBOX_DIR"; }

print_urls() { grep -E '^KVGRPC_(MASTER|REPLICA)_URL=' "$(env_file)"; }

# Value of KEY in the env file (empty if absent).
env_value() { sed -n "s/^$1=//p" "$(env_file)" 2>/dev/null | head -n 1; }

write_env() {
    local pw=$1 tmp
    tmp=$(env_file).tmp
    {
        printf 'KVGRPC_MASTER_URL=mysql://kvgrpc:%s@127.0.0.1:%s/kvgrpc\n' "$pw" "$(port_of master)"
        printf 'KVGRPC_REPLICA_URL=mysql://kvgrpc:%s@127.0.0.1:%s/kvgrpc\n' "$pw" "$(port_of replica)"
        printf 'KVGRPC_SANDBOX_MASTER_SOCKET=%q\n' "$(sock_of master)"
        printf 'KVGRPC_SANDBOX_REPLICA_SOCKET=%q\n' "$(sock_of replica)"
        printf 'KVGRPC_SANDBOX_MASTER_PID=%s\n' "$(running_pid master)"
        printf 'KVGRPC_SANDBOX_REPLICA_PID=%s\n' "$(running_pid replica)"
        printf 'KVGRPC_SANDBOX_MASTER_PORT=%s\n' "$(port_of master)"
        printf 'KVGRPC_SANDBOX_REPLICA_PORT=%s\n' "$(port_of replica)"
    } >"$tmp"
    chmod 600 "$tmp"
    mv -f -- "$tmp" "$(env_file)"
}

# Both servers running and the env file written by a completed `up`.
sandbox_up() {
    running_pid master >/dev/null && running_pid replica >/dev/null && [[ -f $(env_file) ]]
}

# ------------------------------------------------------------ commands ---

declare -A STARTED_PIDS=()
UP_DONE=0

# If `up` fails half-way, don't leave orphan servers behind.
cleanup_failed_up() {
    local rc=$? role
    ((UP_DONE)) && return 0
    for role in replica master; do
        if [[ -n ${STARTED_PIDS[$role]:-} ]]; then
            stop_pid "$role" "${STARTED_PIDS[$role]}" || true
            stop_role "$role" || true
        fi
    done
    log "up failed (exit $rc); logs are in $SANDBOX_DIR"
}

cmd_up() {
    claim_dir
    lock_dir

    if sandbox_up; then
        if [[ $(env_value KVGRPC_SANDBOX_MASTER_PORT) != "$MASTER_PORT" ]]; then
            die "sandbox in $SANDBOX_DIR already runs on port $(env_value KVGRPC_SANDBOX_MASTER_PORT);" \
                "run 'down' first to change KVGRPC_SANDBOX_PORT"
        fi
        log "already up ($SANDBOX_DIR)"
        print_urls
        return 0
    fi

    ensure_bins

    # Half-alive (one server died, or an interrupted up): stop what is left
    # of ours and start over from nothing.
    stop_role replica
    stop_role master

    local role
    for role in master replica; do
        if port_in_use "$(port_of "$role")"; then
            die "port $(port_of "$role") on 127.0.0.1 is already in use; set KVGRPC_SANDBOX_PORT"
        fi
    done

    trap cleanup_failed_up EXIT
    wipe_dir

    # 1. Initialise the master's datadir with mariadb-install-db, then clone
    #    it for the replica. A freshly bootstrapped datadir carries no server
    #    identity (server_id, binlog and GTID state come from my.cnf and from
    #    replication), so the copy is equivalent to a second install-db run --
    #    mysql-test-run does the same. Measured on a 2-CPU box: install-db
    #    takes ~0.5 s alone, two in parallel often ~1.5 s; the sparse copy
    #    (the 96 MiB redo log is mostly zeros) takes ~0.1-0.2 s.
    for role in master replica; do write_cnf "$role"; done
    if ! install_db master; then
        log "mariadb-install-db failed:"
        sed 's/^/    /' "$(role_dir master)/install.log" >&2
        show_log_tail master
        die "mariadb-install-db failed"
    fi
    cp -a --sparse=always -- "$(role_dir master)/data/." "$(role_dir replica)/data/"

    # 2. Start both servers and wait until they accept connections.
    start_server master
    start_server replica
    wait_for_server master
    wait_for_server replica
    log "master up on 127.0.0.1:$(port_of master), replica up on 127.0.0.1:$(port_of replica)"

    # 3. Accounts and database, created on the running master so that they are
    #    binlogged and reach the replica through replication.
    local app_pw repl_pw
    app_pw=$(random_password)
    repl_pw=$(random_password)
    sql master <<EOF
-- root keeps only the unix socket (install-db also opened it on 127.0.0.1 and ::1).
DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';
CREATE DATABASE kvgrpc CHARACTER SET utf8mb4;
CREATE USER 'kvgrpc'@'127.0.0.1' IDENTIFIED BY '$app_pw';
CREATE USER 'kvgrpc'@'localhost' IDENTIFIED BY '$app_pw';
GRANT ALL PRIVILEGES ON \`kvgrpc\`.* TO 'kvgrpc'@'127.0.0.1', 'kvgrpc'@'localhost';
-- Observing replication: SHOW MASTER STATUS / binlog positions (BINLOG MONITOR,
-- formerly REPLICATION CLIENT), SHOW SLAVE STATUS (SLAVE MONITOR, alias
-- REPLICA MONITOR), SHOW PROCESSLIST of other users (PROCESS).
GRANT BINLOG MONITOR, SLAVE MONITOR, PROCESS ON *.* TO 'kvgrpc'@'127.0.0.1', 'kvgrpc'@'localhost';
CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '$repl_pw';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
EOF

    # 4. Point the replica at the master (GTID, from the start of the binlog)
    #    and wait until it has applied everything the master has so far.
    sql replica <<EOF
CHANGE MASTER TO
    MASTER_HOST='127.0.0.1',
    MASTER_PORT=$(port_of master),
    MASTER_USER='repl',
    MASTER_PASSWORD='$repl_pw',
    MASTER_USE_GTID=slave_pos,
    MASTER_CONNECT_RETRY=1;
START SLAVE;
EOF
    local pos
    pos=$(sql master -e 'SELECT @@GLOBAL.gtid_binlog_pos')
    wait_for_replication "$pos"
    log "replica in sync with master at GTID $pos"

    # 5. Publish connection details.
    write_env "$app_pw"
    UP_DONE=1
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
    local role stopped=0
    for role in replica master; do
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
    fi
}

cmd_status() {
    local role pid healthy=1
    for role in master replica; do
        if pid=$(running_pid "$role"); then
            printf '%-8s running (pid %s, 127.0.0.1:%s, socket %s)\n' \
                "$role:" "$pid" "$(port_of "$role")" "$(sock_of "$role")"
        else
            printf '%-8s not running\n' "$role:"
            healthy=0
        fi
    done
    if running_pid replica >/dev/null && [[ -n ${MARIADB:-} ]]; then
        local st io sqlr
        st=$(slave_status || true)
        io=$(slave_field "$st" Slave_IO_Running)
        sqlr=$(slave_field "$st" Slave_SQL_Running)
        printf 'replication: Slave_IO_Running=%s Slave_SQL_Running=%s Seconds_Behind_Master=%s Gtid_IO_Pos=%s\n' \
            "${io:-?}" "${sqlr:-?}" "$(slave_field "$st" Seconds_Behind_Master)" "$(slave_field "$st" Gtid_IO_Pos)"
        local e
        for e in Last_IO_Error Last_SQL_Error; do
            [[ -z $(slave_field "$st" "$e") ]] || printf '%s: %s\n' "$e" "$(slave_field "$st" "$e")"
        done
        [[ $io == Yes && $sqlr == Yes ]] || healthy=0
    fi
    ((healthy))
}

cmd_env() {
    sandbox_up || die "sandbox in $SANDBOX_DIR is not up (run: scripts/mysql-sandbox.sh up)"
    cat -- "$(env_file)"
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd=$1
    shift
    case $cmd in
        up) [[ $# -eq 0 ]] || usage; validate_config; cmd_up ;;
        down) [[ $# -le 1 ]] || usage; validate_config; cmd_down "$@" ;;
        status) [[ $# -eq 0 ]] || usage; validate_config; resolve_bins || true; cmd_status ;;
        env) [[ $# -eq 0 ]] || usage; validate_config; cmd_env ;;
        install) [[ $# -eq 0 ]] || usage; ensure_bins; log "using $MARIADBD, $INSTALL_DB, $MARIADB, $MARIADB_ADMIN" ;;
        *) usage ;;
    esac
}

main "$@"
