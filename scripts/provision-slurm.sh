#!/usr/bin/env bash
# Make a one-node Slurm answer on this machine, for the tests under tests/slurm: installs
# Debian's slurm-wlm and munge, writes a slurm.conf with this machine as both controller and
# compute node (scheduling intervals tuned short so tests do not wait), starts munged,
# slurmctld and slurmd. Does nothing when `sinfo` already answers. Safe to run again.
#
#   sudo scripts/provision-slurm.sh
set -euo pipefail

CONF=/etc/slurm/slurm.conf
say() { printf 'provision-slurm: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    if sinfo -h >/dev/null 2>&1 && [ -n "$(sinfo -h -o %P 2>/dev/null)" ]; then
        say "Slurm already answers: $(sinfo -h -o '%P %D %T' | tr '\n' ' ')"
        exit 0
    fi
    say "no Slurm answers; run this as root to set one up"
    exit 1
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    say "installing slurm-wlm and munge"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
cat >"$CONF.new" <<CONF
# Written by scripts/provision-slurm.sh: one node, controller and compute.
ClusterName=lem
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# cred_expire: also the delay before a requeued job may start again (default 120 s)
AuthInfo=cred_expire=10
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MaxArraySize=100001
MaxJobCount=200000
SchedulerParameters=defer_batch,sched_min_interval=0,batch_sched_delay=0
MessageTimeout=10
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmdTimeout=30
JobRequeue=1
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
changed=1
if cmp -s "$CONF.new" "$CONF"; then changed=0; fi
mv "$CONF.new" "$CONF"

if [ ! -s /etc/munge/munge.key ]; then
    say "creating the munge key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key

if ! munge -n >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- munged --force
fi
for daemon in slurmctld slurmd; do
    if pgrep -x "$daemon" >/dev/null; then
        if [ "$changed" = 1 ]; then
            say "slurm.conf changed: restarting $daemon"
            pid=$(cat "/run/$daemon.pid")
            kill "$pid" || true
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            "$daemon"
        fi
    else
        say "starting $daemon"
        "$daemon"
    fi
done
for _ in $(seq 1 30); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
    case "$state" in idle*|mixed*|allocated*) break ;; esac
    sleep 1
done
scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
say "$(sinfo -h -o '%P %D %T' | tr '\n' ' ')"
sinfo -h >/dev/null
