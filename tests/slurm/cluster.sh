#!/bin/bash
# A one-node SLURM cluster (slurmctld + slurmd on localhost) for the `slurm` tests, as root, without systemd.
# Needs Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them); tested with SLURM 22.05.8.
#
#   SLURM_BASE=/tmp/x bash tests/slurm/cluster.sh start   # munge key, slurm.conf, daemons; waits for an idle node
#   SLURM_BASE=/tmp/x bash tests/slurm/cluster.sh stop    # cancel jobs, stop slurmd, slurmctld, munged (by PID)
#   SLURM_BASE=/tmp/x bash tests/slurm/cluster.sh status
#   source $SLURM_BASE/env.sh                             # SLURM_CONF for sbatch/srun/submitit callers
#
# SLURM_BASE must be a fresh folder per start: job ids restart at 1, and a reused submitit folder would hand back
# an earlier cluster's result files as new. There is no accounting database (no slurmdbd), as on many lab clusters:
# sacct fails, and the launcher (transferlab.sweeps.slurm_jobs) must not need it.
set -euo pipefail
BASE=${SLURM_BASE:?set SLURM_BASE to a fresh folder}
export SLURM_CONF=$BASE/etc/slurm.conf
MUNGE_PID=/run/munge/munged.pid
log() { echo "[slurm-ci $(date +%T)] $*"; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {  # stop_pidfile FILE NAME: SIGTERM the PID in FILE, wait up to 10 s, then SIGKILL
  local f=$1 pid
  alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f"); log "stopping $2 (pid $pid)"; kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

write_conf() {
  local node cpuline
  node=$(hostname -s)
  # Real topology + memory as slurmd sees it (avoids "Node reconfigured socket/core boundaries"
  # and "Low RealMemory" drains). Drop UpTime line.
  cpuline=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$node/")
  cat >"$SLURM_CONF" <<EOF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also the delay before a requeued job may start again (default 120 s)
AuthInfo=cred_expire=10
StateSaveLocation=$BASE/state/ctld
SlurmdSpoolDir=$BASE/state/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# memory not consumable: jobs without --mem do not grab the whole node
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# default sched_interval is 60 s: a requeued job would wait up to a minute more after BeginTime
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
MinJobAge=300
JobRequeue=1
# Real preemption: a job in partition 'high' requeues jobs in 'debug'. With GraceTime the
# victim first gets its --signal (submitit: USR2) thanks to preempt_send_user_signal, else SIGTERM.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
$cpuline NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20
PartitionName=high Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
}

write_env() {
  printf 'export SLURM_CONF=%s\n' "$SLURM_CONF" >"$BASE/env.sh"
}

start_munge() {
  stop_pidfile "$MUNGE_PID" munged   # e.g. one started by the package's init script
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0755 /run/munge; chmod 0700 /var/log/munge /var/lib/munge /etc/munge
  mungekey --create --force --keyfile /etc/munge/munge.key   # fresh key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged                       # daemonizes, writes $MUNGE_PID
  for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { log "munge self-test failed"; tail /var/log/munge/munged.log; exit 1; }
  log "munged up (pid $(cat $MUNGE_PID))"
}

do_start() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null \
    || { log "slurmctld or munged missing: apt-get install slurmctld slurmd slurm-client munge"; exit 1; }
  mkdir -p "$BASE"/{etc,state/ctld,state/d,run,log}
  do_stop quiet
  write_conf; write_env
  start_munge
  rm -rf "$BASE"/state/ctld/* "$BASE"/state/d/*
  for f in slurmctld slurmd; do [ -f "$BASE/log/$f.log" ] && mv "$BASE/log/$f.log" "$BASE/log/$f.log.old"; done
  slurmctld -c            # -c: fresh state; daemonizes
  slurmd -c               # -c: discard old job state
  for _ in $(seq 100); do
    st=$(sinfo -h -o '%T' -p debug 2>/dev/null || true)
    [ "$st" = idle ] && break; sleep 0.2
  done
  if ! alive "$BASE/run/slurmctld.pid" || ! alive "$BASE/run/slurmd.pid"; then  # e.g. another cluster holds the ports
    log "slurmctld or slurmd is not running"; tail -20 "$BASE"/log/slurmctld.log "$BASE"/log/slurmd.log; exit 1
  fi
  if [ "$st" != idle ]; then
    log "node not idle (state '$st')"; sinfo -R || true; tail -20 "$BASE"/log/slurmctld.log "$BASE"/log/slurmd.log; exit 1
  fi
  log "cluster up: ctld pid $(cat "$BASE"/run/slurmctld.pid), slurmd pid $(cat "$BASE"/run/slurmd.pid); source $BASE/env.sh"
  sinfo
}

do_stop() {
  if alive "$BASE/run/slurmctld.pid"; then
    jobs=$(squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs || true
      for _ in $(seq 50); do [ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  stop_pidfile "$BASE/run/slurmd.pid" slurmd
  stop_pidfile "$BASE/run/slurmctld.pid" slurmctld
  [ "${1:-}" = quiet ] || stop_pidfile "$MUNGE_PID" munged
}

case "${1:-start}" in
  start) do_start ;;
  stop) do_stop ;;
  status) for f in "$BASE/run/slurmctld.pid" "$BASE/run/slurmd.pid" "$MUNGE_PID"; do
            alive "$f" && echo "$f: running $(cat "$f")" || echo "$f: not running"; done
          sinfo 2>/dev/null || true ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
