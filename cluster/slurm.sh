#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests and for trying the
# Slurm profile by hand: munge + MariaDB + slurmdbd + slurmctld + slurmd,
# started without systemd.
#
#   cluster/slurm.sh start    write the configs, start what is not running, wait until the node is idle
#   cluster/slurm.sh stop     stop the daemons (newest first), remove pid files; state is kept
#   cluster/slurm.sh purge    stop, then delete the state (job history, accounting database)
#   cluster/slurm.sh status   say what runs; exit 0 only when the node is ready for jobs
#
# Run as root. Installs nothing: it names the Debian packages that are missing
# (.ci/run installs them). Idempotent: `start` on a running cluster returns at
# once, `stop` on a stopped one too.
#
# Where things go (override with the environment variables):
#   /etc/slurm/slurm.conf, slurmdbd.conf  must be there: the Snakemake job-step
#                                         plugin strips SLURM_CONF before its srun
#   CONTIMG_SLURM_STATE=/var/lib/contimg-slurm   controller state, slurmd spool, MariaDB data
#   CONTIMG_SLURM_LOGS=/var/log/contimg-slurm    one log per daemon (look here first)
#   CONTIMG_SLURM_RUN=/run/contimg-slurm         pid files, MariaDB socket
#   CONTIMG_SLURM_DB_PORT=3307                   a private MariaDB on 127.0.0.1 (not the system one)
#   CONTIMG_SLURM_PARTITION=debug                the one (default) partition
# Ports: slurmctld 6817, slurmd 6818, slurmdbd 6819 (all on 127.0.0.1).
set -euo pipefail

STATE=${CONTIMG_SLURM_STATE:-/var/lib/contimg-slurm}
LOGS=${CONTIMG_SLURM_LOGS:-/var/log/contimg-slurm}
RUN=${CONTIMG_SLURM_RUN:-/run/contimg-slurm}
DB_PORT=${CONTIMG_SLURM_DB_PORT:-3307}
PARTITION=${CONTIMG_SLURM_PARTITION:-debug}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
CGROUP_CONF=$CONF_DIR/cgroup.conf
MARK="# written by contimg cluster/slurm.sh"
CTLD_PORT=6817 SLURMD_PORT=6818 DBD_PORT=6819
DB_SOCK=$RUN/mysql/mysqld.sock
DB_PASS=contimg-test   # a throw-away test cluster on 127.0.0.1 only

say() { printf 'slurm.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --------------------------------------------------------------- helpers

port_open() {  # host port: true when something accepts TCP there
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() {  # name port timeout_s [pidfile | pid]
    local name=$1 port=$2 timeout=$3 who=${4:-} i pid
    for ((i = 0; i < timeout * 10; i++)); do
        port_open 127.0.0.1 "$port" && return 0
        if [[ $who =~ ^[0-9]+$ ]]; then pid=$who; else pid=$(pid_of "$who"); fi
        if [[ -n $who && $i -gt 20 ]] && ! { [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }; then
            die "$name exited during start-up; its log: $(logfile_of "$name")"$'\n'"$(tail -n 15 "$(logfile_of "$name")" 2>/dev/null)"
        fi
        sleep 0.1
    done
    die "$name did not open 127.0.0.1:$port within ${timeout}s; its log: $(logfile_of "$name")"$'\n'"$(tail -n 15 "$(logfile_of "$name")" 2>/dev/null)"
}

logfile_of() { echo "$LOGS/$1.log"; }

pid_of() { [[ -s $1 ]] && cat "$1" 2>/dev/null || true; }

alive() {  # pidfile: true when its process runs
    local pid
    pid=$(pid_of "$1")
    [[ -n $pid && -d /proc/$pid ]]
}

need_root() { [[ $EUID -eq 0 ]] || die "run as root (it writes $CONF_DIR and starts daemons)"; }

check_installed() {
    local missing=() cmd pkg
    for pair in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client \
                slurmdbd:slurmdbd mariadbd:mariadb-server mariadb-install-db:mariadb-server; do
        cmd=${pair%%:*} pkg=${pair##*:}
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        die "missing: $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"$'\n'"install with: apt-get install -y --no-install-recommends munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
    fi
}

sbin() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

# --------------------------------------------------------------- configs

# How Slurm holds a job to its memory request. With a writable cgroup v1 memory
# controller: task/cgroup (cgroup.conf ConstrainRAMSpace), as on a production
# cluster: the kernel's OOM killer stops the job's biggest process and sacct says
# OUT_OF_MEMORY. Without one (many containers): jobacct_gather samples the job's
# processes every second and kills the step past its request (sacct: CANCELLED,
# the job's log: "exceeded memory limit").
cgroup_memory_usable() {
    local probe=/sys/fs/cgroup/memory/.contimg-probe-$$
    [[ -f /sys/fs/cgroup/memory/memory.oom_control ]] && mkdir "$probe" 2>/dev/null && rmdir "$probe"
}

memory_enforcement() {
    if cgroup_memory_usable; then
        printf '%s\n' "TaskPlugin=task/cgroup" "JobAcctGatherParams=UsePss"
    else
        printf '%s\n' "TaskPlugin=task/none" "JobAcctGatherParams=OverMemoryKill,UsePss"
    fi
}

write_configs() {
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script (a real cluster?); refusing to overwrite it. Move it away to use the test cluster."
    fi
    local cpus mem_kb mem_mb
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$((mem_kb / 1024 - 1024))  # leave 1 GiB to the system
    ((mem_mb > 512)) || die "too little memory for a test node (${mem_kb} kB)"
    mkdir -p "$CONF_DIR"
    local tmp
    tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
    cat >"$tmp" <<EOF
$MARK
# A single-node test cluster: node "localhost" at 127.0.0.1, whatever the host name.
ClusterName=contimg
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$(logfile_of slurmctld)
SlurmdLogFile=$(logfile_of slurmd)
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
# Each job is held to its memory request (see memory_enforcement).
$(memory_enforcement)
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Refuse at submission what no node of the partition can run (instead of PENDING forever).
EnforcePartLimits=ALL
ReturnToService=2
# The Snakemake plugin may poll squeue: keep finished jobs visible long enough.
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
# Accounting through slurmdbd, so that sacct works (the plugin's status checks use it).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$tmp"
    mv -f "$tmp" "$CONF"

    if cgroup_memory_usable; then
        if [[ -e $CGROUP_CONF ]] && ! grep -qF "$MARK" "$CGROUP_CONF"; then
            die "$CGROUP_CONF exists and was not written by this script; refusing to overwrite it"
        fi
        tmp=$(mktemp "$CONF_DIR/.cgroup.conf.XXXXXX")
        printf '%s\n' "$MARK" "CgroupPlugin=cgroup/v1" "CgroupMountpoint=/sys/fs/cgroup" \
            "ConstrainRAMSpace=yes" "ConstrainSwapSpace=no" "ConstrainCores=no" "ConstrainDevices=no" >"$tmp"
        chmod 644 "$tmp"
        mv -f "$tmp" "$CGROUP_CONF"
    fi

    tmp=$(mktemp "$CONF_DIR/.slurmdbd.conf.XXXXXX")
    cat >"$tmp" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=slurm
DebugLevel=info
LogFile=$(logfile_of slurmdbd)
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
# 127.0.0.1, not localhost: "localhost" means the socket to MySQL clients.
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm "$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$DBD_CONF"
}

make_dirs() {
    mkdir -p "$STATE/slurmctld" "$STATE/slurmd" "$LOGS" "$RUN/mysql" "$STATE/mysql"
    chown slurm:slurm "$STATE/slurmctld" "$STATE/slurmd" "$RUN"
    chown mysql:mysql "$STATE/mysql" "$RUN/mysql"
    chmod 755 "$RUN" "$RUN/mysql" "$LOGS"
    touch "$LOGS"/{slurmctld,slurmd,slurmdbd,mariadb,munged}.log
    chown slurm:slurm "$LOGS"/{slurmctld,slurmd,slurmdbd}.log
    chown mysql:mysql "$LOGS/mariadb.log"
    chown munge:munge "$LOGS/munged.log"
    # munge's own default places (clients look for /run/munge/munge.socket.2).
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
}

# --------------------------------------------------------------- daemons

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then return 0; fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    say "starting munged"
    runuser -u munge -- "$(sbin munged)" --force --log-file="$(logfile_of munged)" \
        </dev/null >/dev/null 2>&1 || die "munged did not start; see $(logfile_of munged)"
    local i
    for ((i = 0; i < 100; i++)); do munge_ok && return 0; sleep 0.1; done
    die "munge does not answer after 10 s; see $(logfile_of munged)"
}

db() { mariadb --no-defaults --socket="$DB_SOCK" -uroot "$@"; }

start_mariadb() {
    local pidfile=$RUN/mysql/mariadb.pid
    if alive "$pidfile" && port_open 127.0.0.1 "$DB_PORT"; then return 0; fi
    if port_open 127.0.0.1 "$DB_PORT"; then
        die "127.0.0.1:$DB_PORT is taken by another program; set CONTIMG_SLURM_DB_PORT to a free port"
    fi
    if [[ ! -d $STATE/mysql/mysql ]]; then
        say "initialising the accounting database in $STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
            --auth-root-authentication-method=socket --skip-test-db \
            >>"$(logfile_of mariadb)" 2>&1 || die "mariadb-install-db failed; see $(logfile_of mariadb)"
    fi
    say "starting mariadbd on 127.0.0.1:$DB_PORT"
    setsid "$(sbin mariadbd)" --no-defaults --user=mysql --datadir="$STATE/mysql" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$DB_SOCK" \
        --pid-file="$pidfile" --log-error="$(logfile_of mariadb)" --skip-name-resolve \
        --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=2 \
        --innodb-lock-wait-timeout=900 \
        </dev/null >/dev/null 2>&1 &
    local pid=$!
    wait_port mariadb "$DB_PORT" 60 "$pid"
    sleep 0.3
    kill -0 "$pid" 2>/dev/null || die "mariadbd exited during start-up; its log: $(logfile_of mariadb)"$'\n'"$(tail -n 15 "$(logfile_of mariadb)")"
    local i
    for ((i = 0; i < 100; i++)); do db -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
    db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
           CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
           FLUSH PRIVILEGES;" || die "could not create the slurm database user; see $(logfile_of mariadb)"
}

start_slurmdbd() {
    local pidfile=$RUN/slurmdbd.pid
    if alive "$pidfile" && port_open 127.0.0.1 "$DBD_PORT"; then return 0; fi
    say "starting slurmdbd"
    setsid "$(sbin slurmdbd)" </dev/null >/dev/null 2>&1 || die "slurmdbd did not start; see $(logfile_of slurmdbd)"
    # The first start creates the tables: allow time for that.
    wait_port slurmdbd "$DBD_PORT" 120 "$pidfile"
}

start_slurmctld() {
    local pidfile=$RUN/slurmctld.pid
    if alive "$pidfile" && port_open 127.0.0.1 "$CTLD_PORT"; then return 0; fi
    say "starting slurmctld"
    setsid "$(sbin slurmctld)" </dev/null >/dev/null 2>&1 || die "slurmctld did not start; see $(logfile_of slurmctld)"
    wait_port slurmctld "$CTLD_PORT" 60 "$pidfile"
}

start_slurmd() {
    local pidfile=$RUN/slurmd.pid
    if alive "$pidfile" && port_open 127.0.0.1 "$SLURMD_PORT"; then return 0; fi
    say "starting slurmd"
    # Only after slurmctld answers: a slurmd started first can hang and ignore SIGTERM.
    setsid "$(sbin slurmd)" -N localhost </dev/null >/dev/null 2>&1 || die "slurmd did not start; see $(logfile_of slurmd)"
    wait_port slurmd "$SLURMD_PORT" 60 "$pidfile"
}

node_state() { timeout 15 sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1 || true; }

wait_idle() {
    local i state=""
    for ((i = 0; i < 60; i++)); do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            drain* | down* | fail*)
                scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "node localhost is '${state:-unknown}' after 30 s, not idle; see $(logfile_of slurmd) and $(logfile_of slurmctld)"
}

stop_pidfile() {  # name pidfile: SIGTERM, wait, then SIGKILL
    local name=$1 pidfile=$2 pid i comm
    pid=$(pid_of "$pidfile")
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    # A pid file left by a daemon killed without warning may name another process by now.
    [[ $comm == "${name%%-*}"* || ($name == mariadb && $comm == mariadbd) ]] || pid=""
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name ignores SIGTERM after 15 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    fi
    rm -f "$pidfile"
}

# --------------------------------------------------------------- commands

cmd_start() {
    need_root
    check_installed
    id slurm >/dev/null 2>&1 || die "no user 'slurm' (install the slurmctld package)"
    id munge >/dev/null 2>&1 || die "no user 'munge' (install the munge package)"
    id mysql >/dev/null 2>&1 || die "no user 'mysql' (install the mariadb-server package)"
    write_configs
    make_dirs
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_idle
    say "ready: partition '$PARTITION', node localhost ($(nproc) CPUs); logs in $LOGS"
}

cmd_stop() {
    need_root
    if port_open 127.0.0.1 "$CTLD_PORT"; then
        timeout 15 scancel --state=PENDING,RUNNING --full >/dev/null 2>&1 || true
    fi
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    stop_pidfile mariadb "$RUN/mysql/mariadb.pid"
    # munged is shared with anything else on the machine that uses munge; stop
    # it only when this script started it (its log file says so).
    local pid
    pid=$(pgrep -x munged -u munge 2>/dev/null | head -n1 || true)
    if [[ -n $pid ]] && tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | grep -qF -- "--log-file=$(logfile_of munged)"; then
        echo "$pid" >"$RUN/munged.pid"
        stop_pidfile munged "$RUN/munged.pid"
    fi
    say "stopped"
}

cmd_purge() {
    cmd_stop
    say "removing $STATE and the configs"
    rm -rf "$STATE"
    for f in "$CONF" "$DBD_CONF" "$CGROUP_CONF"; do
        [[ -e $f ]] && grep -qF "$MARK" "$f" && rm -f "$f"
    done
    return 0
}

cmd_status() {
    local ok=0 name pidfile port
    if munge_ok; then echo "munged     up"; else echo "munged     down"; ok=1; fi
    for name in mariadb:$DB_PORT slurmdbd:$DBD_PORT slurmctld:$CTLD_PORT slurmd:$SLURMD_PORT; do
        port=${name##*:} name=${name%%:*} pidfile=$RUN/$name.pid
        [[ $name == mariadb ]] && pidfile=$RUN/mysql/mariadb.pid
        if alive "$pidfile" && port_open 127.0.0.1 "$port"; then
            printf '%-10s up (pid %s, 127.0.0.1:%s)\n' "$name" "$(pid_of "$pidfile")" "$port"
        else
            printf '%-10s down\n' "$name"; ok=1
        fi
    done
    if port_open 127.0.0.1 "$CTLD_PORT"; then
        local state
        state=$(node_state)
        echo "node       localhost ${state:-unknown}"
        case $state in idle | mixed | allocated | completing) ;; *) ok=1 ;; esac
    fi
    return $ok
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    purge) cmd_purge ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|purge|status" >&2; exit 2 ;;
esac
