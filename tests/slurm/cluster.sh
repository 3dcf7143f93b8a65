#!/usr/bin/env bash
# A throw-away Slurm cluster of N "nodes" on this one machine, for the tests (root only).
#
#   cluster.sh install | start | stop
#
# install: Debian's slurmctld, slurmd, slurm-client and munge, when absent (apt).
# start:   a private munged, slurmctld and one slurmd per node, each slurmd in its own UTS and
#          mount namespace (hostname n<i>, a private /etc/hosts mapping n<i> -> 127.0.0.<1+i>),
#          so jobs see distinct hostnames that resolve, over loopback only. Nothing in /etc or
#          /run is written; every daemon's PID is kept under $SLURM_CI_DIR/run.
# stop:    cancels the jobs, stops every daemon it started by PID (zombies count as stopped),
#          keeps $SLURM_CI_DIR/log.
# Clients need SLURM_CONF=$SLURM_CI_DIR/slurm.conf (jobs inherit it).
#
# Env: SLURM_CI_DIR (required), SLURM_CI_NODES (2), SLURM_CI_PORT (6817: slurmctld; the next
#      port is slurmd's default and the node ports follow), SLURM_CI_CPUS per node (2),
#      SLURM_CI_MEM_MB per node (8000).
# Measured facts behind the settings: see docs/decisions.md ("Slurm").
set -euo pipefail
D=${SLURM_CI_DIR:?set SLURM_CI_DIR to a private directory}
N=${SLURM_CI_NODES:-2}
P=${SLURM_CI_PORT:-6817}
CPUS=${SLURM_CI_CPUS:-2}
MEM=${SLURM_CI_MEM_MB:-8000}
export SLURM_CONF=$D/slurm.conf

alive() { [ -r "/proc/$1/status" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }
stop_pid() {  # stop_pid PIDFILE: TERM, up to 10 s, then KILL
  local f=$1 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

do_install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  # cred_expire=5: a requeued job is eligible again after 6 s instead of 121 s.
  # bf_interval/sched_interval: it is then started within 1-2 s.
  cat > "$SLURM_CONF" <<EOF
ClusterName=ci
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$P
SlurmdPort=$((P+1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket,cred_expire=5
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld-conf.pid
SlurmdPidFile=$D/run/slurmd-%n-conf.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
EOF
  for i in $(seq 1 "$N"); do
    echo "NodeName=n$i NodeHostname=n$i NodeAddr=127.0.0.1 Port=$((P+3+i)) CPUs=$CPUS" \
      "CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM" >> "$SLURM_CONF"
  done
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >> "$SLURM_CONF"
  { cat /etc/hosts; for i in $(seq 1 "$N"); do echo "127.0.0.$((1+i)) n$i"; done; } > "$D/hosts"
}

do_start() {
  if [ -s "$D/run/slurmctld.pid" ] && alive "$(cat "$D/run/slurmctld.pid")"; then
    echo "already running"; return 0
  fi
  mkdir -p "$D"/{state,spool,log,run,munge}
  chmod 755 "$D/munge"  # munged refuses a key directory writable by group or others
  if [ ! -s "$D/munge/munge.key" ]; then
    head -c 1024 /dev/urandom > "$D/munge/munge.key"; chmod 400 "$D/munge/munge.key"
  fi
  # Foreground daemons started as background jobs: $! is the daemon's own PID.
  /usr/sbin/munged -F -f --key-file="$D/munge/munge.key" --socket="$D/munge/munge.socket" \
    --pid-file="$D/munge/munged.pid" --log-file="$D/log/munged.log" \
    --seed-file="$D/munge/munged.seed" </dev/null >>"$D/log/munged.out" 2>&1 &
  echo $! > "$D/run/munged.pid"
  for _ in $(seq 1 50); do [ -S "$D/munge/munge.socket" ] && break; sleep 0.1; done
  write_conf
  slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$D/log/slurmctld.out" 2>&1 &
  echo $! > "$D/run/slurmctld.pid"
  for i in $(seq 1 "$N"); do
    # unshare + exec: $! is slurmd itself; its jobs inherit hostname n$i and the hosts file.
    unshare --uts --mount --propagation private sh -c \
      "hostname n$i && mount --bind '$D/hosts' /etc/hosts && exec slurmd -D -N n$i -f '$SLURM_CONF'" \
      </dev/null >>"$D/log/slurmd-n$i.out" 2>&1 &
    echo $! > "$D/run/slurmd-n$i.pid"
  done
  for _ in $(seq 1 300); do  # up to 30 s until every node is idle
    if [ "$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)" -eq "$N" ]; then
      sinfo -N; return 0
    fi
    sleep 0.1
  done
  echo "slurm did not come up; log tails:" >&2
  tail -n 20 "$D"/log/*.log "$D"/log/*.out >&2 || true
  do_stop
  return 1
}

do_stop() {
  if [ -s "$D/run/slurmctld.pid" ] && alive "$(cat "$D/run/slurmctld.pid")"; then
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086  # one argument per job id
      scancel --full --quiet $jobs 2>/dev/null || true
    fi
    for _ in $(seq 1 150); do
      [ -z "$(squeue -h -t running,completing 2>/dev/null)" ] && break; sleep 0.1
    done
  fi
  for f in "$D"/run/slurmd-n*.pid; do [ -e "$f" ] && stop_pid "$f"; done
  stop_pid "$D/run/slurmctld.pid"
  stop_pid "$D/run/munged.pid"
  rm -rf "$D/state" "$D/spool" "$D/munge/munge.socket"*
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
