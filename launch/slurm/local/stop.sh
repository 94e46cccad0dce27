#!/usr/bin/env bash
# Stop the private Slurm cluster started by launch/slurm/local/start.sh.
# Only processes named by $SLURM_LOCAL_DIR/run/*.pid whose executable matches are signalled;
# jobs still queued/running on this cluster are cancelled first so that no slurmstepd or
# job processes are left behind.
#   SLURM_LOCAL_DIR   same as for launch/slurm/local/start.sh               (default /tmp/local-slurm)
#   SLURM_WIPE=1      also delete $SLURM_LOCAL_DIR (state, database, logs, munge key)
set -uo pipefail

D=${SLURM_LOCAL_DIR:-/tmp/local-slurm}
export SLURM_CONF=$D/etc/slurm.conf
log() { echo "[local-slurm stop] $*" >&2; }

# alive PID: exists and is not a zombie (a PID 1 that reaps orphans late leaves exited
# daemons in state Z for a while)
alive() {
  local st
  st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null)
  [ -n "$st" ] && [ "$st" != Z ]
}

# pid_of PIDFILE PROGRAM: print the pid if it is alive and executing PROGRAM
pid_of() {
  local pid exe want
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  exe=$(readlink -f "/proc/$pid/exe" 2>/dev/null) || return 1
  want=$(readlink -f "$(command -v "$2" || echo "/nonexistent/$2")")
  [ "$exe" = "$want" ] || return 1
  echo "$pid"
}

stop() {  # stop PIDFILE PROGRAM
  local pid
  if pid=$(pid_of "$1" "$2"); then
    log "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 120); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "$2 did not exit after 12s, SIGKILL"; kill -KILL "$pid" 2>/dev/null; fi
  fi
  rm -f "$1"
}

if pid_of "$D/run/slurmctld.pid" slurmctld >/dev/null && [ -f "$SLURM_CONF" ]; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 60); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi

for f in "$D"/run/slurmd-*.pid; do [ -e "$f" ] && stop "$f" slurmd; done
stop "$D/run/slurmctld.pid" slurmctld
stop "$D/run/slurmdbd.pid"  slurmdbd
stop "$D/run/mysqld.pid"    mariadbd
stop "$D/run/munged.pid"    munged
rm -f "$D/run/munge.sock" "$D/run/munge.sock.lock" "$D/run/mysqld.sock"

# remove /etc/slurm/slurm.conf only if launch/slurm/local/start.sh created it and it is still ours
if [ -f "$D/run/etc-link" ] && [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$D/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
rm -f "$D/run/etc-link"

if [ "${SLURM_WIPE:-0}" = 1 ]; then
  log "wiping $D"
  rm -rf "$D"
fi
log "stopped"
