#!/usr/bin/env bash
# A one-node SLURM cluster in one folder, for tests and CI: munged, slurmctld and slurmd from Debian's
# packages (apt-get install slurmd slurmctld slurm-client munge), started without systemd, run as root.
#
#   bash scripts/slurm_local_cluster.sh start DIR    # writes DIR/slurm.conf, starts the daemons (~5 s)
#   export SLURM_CONF=DIR/slurm.conf                 # clients need it (else they try DNS SRV lookups)
#   bash scripts/slurm_local_cluster.sh stop DIR     # cancels the jobs, stops the daemons
#
# Config, state, spool, logs and munge's socket and key all live in DIR, so several clusters (and a
# system-wide munge) can coexist. Knobs: SLURM_LOCAL_CPUS (CPUs the node declares, default 8: more than
# the cores so that small test jobs run side by side), SLURM_LOCAL_PORT (slurmctld's port; slurmd takes
# the next one; default: two free ports).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf

free_port_pair() {  # a port p with p and p+1 free on this machine
  python3 - <<'EOF'
import socket
for _ in range(100):
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0))
        p = a.getsockname()[1]
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", p + 1))
        except OSError:
            continue
        print(p)
        break
EOF
}

stop() {
  if [ -f "$conf" ] && [ -S "$dir/munge/munge.socket" ]; then
    SLURM_CONF=$conf timeout 10 scancel --quiet --full --user root 2>/dev/null || true
  fi
  for name in slurmd slurmctld munged; do
    pidfile=$dir/run/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

start() {
  for cmd in munged slurmctld slurmd sbatch; do
    command -v "$cmd" >/dev/null || { echo "$0: $cmd not found (apt-get install slurmd slurmctld slurm-client munge)" >&2; exit 1; }
  done
  [ "$(id -u)" -eq 0 ] || { echo "$0: run as root (slurmd must start jobs)" >&2; exit 1; }
  stop  # a cluster left over in DIR
  mkdir -p "$dir"/{munge,state,spool,log,run}
  chmod 700 "$dir/munge"
  if [ ! -f "$dir/munge/munge.key" ]; then
    head -c 1024 /dev/urandom > "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
  fi
  # --force: munged refuses a key or socket under a folder it did not expect without it
  munged --force --socket "$dir/munge/munge.socket" --key-file "$dir/munge/munge.key" \
    --pid-file "$dir/run/munged.pid" --log-file "$dir/log/munged.log" --seed-file "$dir/munge/munge.seed"

  port=${SLURM_LOCAL_PORT:-$(free_port_pair)}
  host=$(hostname -s)
  cat > "$conf" <<EOF
# written by scripts/slurm_local_cluster.sh: one node, everything under $dir
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# process groups, no cgroups: works in containers; a launcher must keep its processes in its group
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
# the node declares the CPUs below whatever the machine has
SlurmdParameters=config_overrides
# finished jobs stay visible to scontrol for 10 minutes (no accounting database here)
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${SLURM_LOCAL_CPUS:-8} RealMemory=4000 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$conf
  slurmctld -c  # a fresh state: no jobs from an earlier cluster in DIR
  slurmd -N localhost  # the node's name resolves on any machine (launchers rendezvous on it)
  for _ in $(seq 300); do  # up when the node is idle (about 5 s)
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
      echo "SLURM cluster up in $dir: export SLURM_CONF=$conf"
      return 0
    fi
    sleep 0.1
  done
  echo "$0: the node did not come up; logs in $dir/log" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  exit 1
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
