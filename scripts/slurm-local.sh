#!/usr/bin/env bash
# A single-node SLURM on this machine, for site-configs/slurm-local.yaml and tests/test_slurm.py.
#
#   bash scripts/slurm-local.sh        # as root; idempotent, about a second when SLURM is already up
#
# Installs Debian's slurm-wlm, munge and libpmix-dev when absent, writes /etc/slurm/slurm.conf and gres.conf
# (a different slurm.conf is kept once as slurm.conf.before-slurm-local), starts munged (as user munge),
# slurmctld and slurmd (as root) when they are not answering, and waits until the node takes jobs.
# Exit 0: SLURM is up. Exit 3: it cannot be installed or started here; the last line of stderr says why
# (tests/test_slurm.py skips with that line).
set -uo pipefail

unavailable() { echo "slurm-local: unavailable: $*" >&2; exit 3; }
log() { echo "slurm-local: $*"; }

[ "$(id -u)" = 0 ] || unavailable "needs root (it installs packages and starts munged, slurmctld, slurmd)"

NODE=$(hostname -s)
CPUS=$(getconf _NPROCESSORS_ONLN)  # not nproc: it reports OMP_NUM_THREADS when that is set (as in the tests)
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
SPOOL=/var/spool/slurm-local  # state of its own: another cluster's state files stop slurmctld

# libpmix-dev: slurm's mpi/pmix plugin dlopens libpmix.so, which only the -dev package provides; without it
# `srun --mpi=pmix` fails with "can not load PMIx library" and Debian's OpenMPI pw.x dies in MPI_Init.
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
ls /usr/lib/*/libpmix.so >/dev/null 2>&1 || missing+=(libpmix-dev)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq slurm-wlm munge libpmix-dev >/dev/null; } \
        || unavailable "apt-get install slurm-wlm munge libpmix-dev failed"
fi

# Everything that makes a single machine a cluster: one node (this one, reached on 127.0.0.1), two
# partitions. OverSubscribe=FORCE lets the site's HTEX blocks (one per executor) share the few cores, as
# they would have nodes of their own on a cluster; CR_Core leaves memory unscheduled (no RealMemory here).
# proctrack/linuxproc and task/none: no cgroups in containers. No accounting: any account string passes.
# The GPU is /dev/null (gres.conf): the gpu partition's jobs are scheduled as on a GPU node, computing on CPU.
# MpiDefault=pmix: a plain `srun pw.x` starts Debian's OpenMPI ranks too, not only `srun --mpi=pmix`.
want_conf="# written by scripts/slurm-local.sh: a single-node SLURM for tests (rewritten when it differs)
ClusterName=reactforge-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Gres=gpu:1 State=UNKNOWN
PartitionName=standard Nodes=$NODE Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP"
want_gres="Name=gpu File=/dev/null"

mkdir -p /etc/slurm "$SPOOL/ctld" "$SPOOL/d" "$LOGDIR"
changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$want_conf" ]; then
    if [ -f "$CONF" ] && ! grep -q "scripts/slurm-local.sh" "$CONF" && [ ! -e "$CONF.before-slurm-local" ]; then
        cp -p "$CONF" "$CONF.before-slurm-local"
    fi
    printf '%s\n' "$want_conf" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    changed=1
fi
if [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$want_gres" ]; then
    printf '%s\n' "$want_gres" >/etc/slurm/gres.conf
    changed=1
fi

# munge: a key (the package's postinst makes one; a bare image may lack it), then munged as user munge
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    rm -f /run/munge/munged.pid  # left by a daemon of an earlier container
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force || unavailable "munged did not start (see /var/log/munge)"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || unavailable "munged does not answer (see /var/log/munge)"
fi

# a daemon is "ours and running" when its pid file names a live process of that name
running() {
    local pid
    pid=$(cat "/run/$1.pid" 2>/dev/null) && [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ]
}

if [ "$changed" = 1 ] && running slurmctld; then
    log "configuration changed: restarting slurmctld and slurmd"
    for d in slurmd slurmctld; do running $d && kill "$(cat /run/$d.pid)"; done
    for _ in $(seq 50); do running slurmctld || running slurmd || break; sleep 0.2; done
fi
if ! running slurmctld; then
    log "starting slurmctld"
    # -c: a cold start begins with an empty queue; jobs recorded by a daemon that was stopped with its
    # machine have no processes left, and would hold the node until their walltime
    /usr/sbin/slurmctld -c || unavailable "slurmctld did not start (see $LOGDIR/slurmctld.log)"
fi
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q "is UP" || unavailable "slurmctld does not answer (see $LOGDIR/slurmctld.log)"
if ! running slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd -N "$NODE" || unavailable "slurmd did not start (see $LOGDIR/slurmd.log)"
fi

# the node takes jobs once it is idle, mixed or allocated; one left DOWN/DRAIN by an earlier daemon is resumed
state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }
for _ in $(seq 100); do
    case "$(state)" in
        idle*|mix*|alloc*) log "up: node $NODE ($CPUS CPUs), partitions standard and gpu"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null ;;
    esac
    sleep 0.2
done
unavailable "node $NODE is '$(state)', not taking jobs (see $LOGDIR/slurmd.log; scontrol show node $NODE)"
