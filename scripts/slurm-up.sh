#!/usr/bin/env bash
# slurm-up.sh - install and run a throwaway single-node SLURM cluster
# (Debian 12 "bookworm", slurm-wlm 22.05, munge; root; no systemd needed),
# for uws-hub's tests (tests/conftest.py's `slurm` fixture, .ci/run) and for
# trying the SLURM spawner out (docs/slurm.md). Not for production.
#
#   slurm-up.sh [up]            install if needed, start munged/slurmctld/slurmd,
#                               wait until the node is usable; no-op if healthy
#   slurm-up.sh stop [--cancel-jobs]
#                               stop only the daemons this script started
#                               (PIDs recorded in $SLURM_TEST_DIR/run/*.pid)
#   slurm-up.sh restart         stop + up (jobs keep running across it)
#   slurm-up.sh status          exit 0 if healthy, print what is running
#   slurm-up.sh conf            print the slurm.conf it would write
#   (can also be sourced to get the functions, e.g. for tests)
#
# Environment:
#   SLURM_TEST_DIR   state/spool/logs/pid files      (default /tmp/uws-slurm)
#   SLURM_CONF       where slurm.conf is written     (default /etc/slurm/slurm.conf;
#                    clients read the same variable, so export it if you move it)
#   SLURM_TEST_CPUS  CPUs advertised for the node    (default: nproc, at least 8; a
#                    value above nproc adds SlurmdParameters=config_overrides, i.e.
#                    oversubscription, so that several test jobs fit on 2 cores)
#   SLURM_TEST_MIN_JOB_AGE  seconds finished jobs stay visible to squeue/scontrol
#                    (default 3600)
#   SLURM_UP_TIMEOUT seconds to wait for the node to become usable (default 60)
set -euo pipefail

SLURM_TEST_DIR="${SLURM_TEST_DIR:-/tmp/uws-slurm}"
export SLURM_CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
WAIT_S="${SLURM_UP_TIMEOUT:-60}"
RUN="$SLURM_TEST_DIR/run"          # PIDs of daemons *this script* started
NODE=localhost
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { printf '[slurm-up %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- health
have()     { command -v "$1" >/dev/null 2>&1; }
munge_ok() { have munge && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_ok()  { have scontrol && timeout 15 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { timeout 15 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1; }
node_ok()  { case "$(node_state)" in idle|mix|alloc|comp) return 0 ;; *) return 1 ;; esac; }
slurmd_ok() { pid_alive "$(cat "$SLURM_TEST_DIR/slurmd.pid" 2>/dev/null)" slurmd; }
ctld_alive() { pid_alive "$(cat "$SLURM_TEST_DIR/slurmctld.pid" 2>/dev/null)" slurmctld; }
# cheap pid checks first: a client command against a dead slurmctld takes ~10 s to fail
healthy()  { munge_ok && ctld_alive && slurmd_ok && ctld_ok && node_ok; }
pid_alive() { # pid name -> true if pid is alive and is that program
  [ -n "${1:-}" ] && [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

# ---------------------------------------------------------------- install
apt_get() { # apt-get with waiting/retrying while another process holds the apt/dpkg locks
  local try out rc
  out="$(mktemp)"
  for try in $(seq 1 120); do
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@" >"$out" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then tail -n 2 "$out" >&2; rm -f "$out"; return 0; fi
    if grep -qiE 'Could not get lock|Unable to lock|is another process using it|dpkg was interrupted' "$out"; then
      grep -qi 'dpkg was interrupted' "$out" && { log "dpkg interrupted; running dpkg --configure -a"; dpkg --configure -a || true; }
      log "apt-get $1: lock busy (try $try/120), waiting 5 s"; sleep 5; continue
    fi
    cat "$out" >&2; rm -f "$out"; return "$rc"
  done
  rm -f "$out"; return 1
}

installed() { # all given packages installed?
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || return 1
  done
}

install_pkgs() {
  if installed slurm-wlm munge; then log "slurm-wlm and munge already installed"; return; fi
  local t0=$SECONDS made_policy=0
  # Keep dpkg from trying to start services (no init system here); we start them ourselves.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  log "apt-get update"
  apt_get update || { [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; die "apt-get update failed"; }
  log "apt-get install slurm-wlm munge"
  apt_get install -y --no-install-recommends slurm-wlm munge \
    || { [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "installed in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- munge
start_munged() {
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if have mungekey; then
      runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  if munge_ok; then
    if pid_alive "$(cat "$RUN/munged.pid" 2>/dev/null)" munged; then log "munged (ours, pid $(cat "$RUN/munged.pid")) healthy"
    else log "munged already running and healthy, not started by slurm-up: left alone"; fi
    return
  fi
  local old; old="$(cat /run/munge/munged.pid 2>/dev/null || true)"
  if pid_alive "$old" munged; then
    die "munged pid $old is running but not answering; not touching a daemon slurm-up did not start"
  fi
  log "starting munged as user munge"
  runuser -u munge -- /usr/sbin/munged
  local i; for i in $(seq 1 50); do munge_ok && break; sleep 0.2; done
  munge_ok || die "munged did not come up (see /var/log/munge/munged.log)"
  cat /run/munge/munged.pid >"$RUN/munged.pid"
  log "munged pid $(cat "$RUN/munged.pid")"
}

# ---------------------------------------------------------------- config
gen_conf() {
  local ncpu real_cpus mem_mb real_mb extra=""
  real_cpus="$(nproc)"
  ncpu="${SLURM_TEST_CPUS:-$(( real_cpus < 8 ? 8 : real_cpus ))}"
  mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
  real_mb=$(( mem_mb * 80 / 100 ))                 # slurmd drains the node if this > real
  [ "$ncpu" -gt "$real_cpus" ] && extra="SlurmdParameters=config_overrides"
  cat <<EOF
# written by slurm-up.sh - single-node test cluster; do not use in production
ClusterName=uwstest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_TEST_DIR/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
ReturnToService=2
MinJobAge=${SLURM_TEST_MIN_JOB_AGE:-3600}
KillWait=5
InactiveLimit=0
Waittime=0
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_TEST_DIR/state
SlurmdSpoolDir=$SLURM_TEST_DIR/spool
SlurmctldPidFile=$SLURM_TEST_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_TEST_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_TEST_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_TEST_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$extra
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

write_conf() { # returns 0 if the file changed
  local new; new="$(gen_conf)"
  if [ -f "$SLURM_CONF" ] && [ "$(cat "$SLURM_CONF")" = "$new" ]; then return 1; fi
  mkdir -p "$(dirname "$SLURM_CONF")"
  if [ -f "$SLURM_CONF" ] && ! grep -q 'written by slurm-up.sh' "$SLURM_CONF"; then
    cp -n "$SLURM_CONF" "$SLURM_CONF.orig-before-slurm-up"
    log "kept the previous $SLURM_CONF as $SLURM_CONF.orig-before-slurm-up"
  fi
  printf '%s\n' "$new" >"$SLURM_CONF"; chmod 644 "$SLURM_CONF"
  log "wrote $SLURM_CONF"
  return 0
}

# ---------------------------------------------------------------- slurm daemons
start_daemon() { # name cmd...   (daemonises itself, writes its own pid file)
  local name="$1"; shift
  local pidf="$SLURM_TEST_DIR/$name.pid" i
  log "starting $name"
  "$@" >>"$SLURM_TEST_DIR/log/$name.stdout" 2>&1 || die "$name failed to start (see $SLURM_TEST_DIR/log/$name.log)"
  for i in $(seq 1 50); do pid_alive "$(cat "$pidf" 2>/dev/null)" "$name" && break; sleep 0.2; done
  pid_alive "$(cat "$pidf" 2>/dev/null)" "$name" || { tail -n 20 "$SLURM_TEST_DIR/log/$name.log" >&2 || true; die "$name not running"; }
  cat "$pidf" >"$RUN/$name.pid"
  log "$name pid $(cat "$RUN/$name.pid")"
}

stop_one() { # name: stop it only if we started it (recorded PID, same program)
  local name="$1" pid i
  [ -f "$RUN/$name.pid" ] || { log "$name: not started by slurm-up, leaving it alone"; return 0; }
  pid="$(cat "$RUN/$name.pid")"
  if pid_alive "$pid" "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do pid_alive "$pid" "$name" || break; sleep 0.2; done
    if pid_alive "$pid" "$name"; then log "$name pid $pid ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid" || true; fi
  else
    log "$name pid $pid already gone"
  fi
  rm -f "$RUN/$name.pid"
}

cmd_stop() {
  if [ "${1:-}" = "--cancel-jobs" ] && ctld_alive && ctld_ok; then
    log "cancelling all jobs"; scancel $(squeue -h -o %i) 2>/dev/null || true; sleep 2
  fi
  stop_one slurmd
  stop_one slurmctld
  stop_one munged
}

cmd_status() {
  local rc=0 n
  for n in munged slurmctld slurmd; do
    if [ -f "$RUN/$n.pid" ]; then
      echo "$n: started by slurm-up, pid $(cat "$RUN/$n.pid") ($(pid_alive "$(cat "$RUN/$n.pid")" "$n" && echo alive || echo gone))"
    else echo "$n: not started by slurm-up"; fi
  done
  munge_ok && echo "munge: OK" || { echo "munge: FAIL"; rc=1; }
  if ctld_alive && ctld_ok; then
    echo "slurmctld: UP"
    slurmd_ok && echo "slurmd: running" || { echo "slurmd: not running"; rc=1; }
    echo "node $NODE: $(node_state || true)"; node_ok || rc=1
  else echo "slurmctld: DOWN"; rc=1; fi
  return $rc
}

cmd_up() {
  local t0=$SECONDS changed=0 s i
  if have sinfo && [ -f "$SLURM_CONF" ] && [ "$(cat "$SLURM_CONF")" = "$(gen_conf)" ] && healthy; then
    log "cluster already running and healthy (node $NODE: $(node_state)); nothing to do"; return 0
  fi
  install_pkgs
  mkdir -p "$SLURM_TEST_DIR"/{state,spool,log} "$RUN"
  chmod 755 "$SLURM_TEST_DIR" "$SLURM_TEST_DIR/log"
  # saved jobs hold their batch scripts and environments (API tokens): root only
  chmod 700 "$SLURM_TEST_DIR/state"
  start_munged
  write_conf && changed=1 || true

  # slurmctld
  if [ "$changed" = 1 ] && ctld_alive && ctld_ok; then
    if [ -f "$RUN/slurmctld.pid" ]; then
      log "slurm.conf changed; restarting the daemons slurm-up started"; stop_one slurmd; stop_one slurmctld
    else
      log "slurm.conf changed but slurmctld is not ours; scontrol reconfigure"; scontrol reconfigure || true
    fi
  fi
  if ! { ctld_alive && ctld_ok; }; then
    s="$(cat "$SLURM_TEST_DIR/slurmctld.pid" 2>/dev/null || true)"
    if pid_alive "$s" slurmctld; then
      if [ -f "$RUN/slurmctld.pid" ]; then log "slurmctld pid $s not answering; restarting it"; stop_one slurmctld
      else die "slurmctld pid $s (not ours) is not answering"; fi
    fi
    start_daemon slurmctld slurmctld          # recovers saved jobs from StateSaveLocation
  fi

  # slurmd
  s="$(cat "$SLURM_TEST_DIR/slurmd.pid" 2>/dev/null || true)"
  if ! pid_alive "$s" slurmd; then
    start_daemon slurmd slurmd -N "$NODE"
  fi

  log "waiting up to ${WAIT_S}s for node $NODE to become idle"
  local resumed=0
  for i in $(seq 1 $((WAIT_S * 2))); do
    s="$(node_state || true)"
    case "$s" in
      idle|mix|alloc|comp) log "node $NODE is $s; cluster up in $((SECONDS - t0)) s"; return 0 ;;
      drain*|drng*|down|fail*)   # responding but administratively out: put it back once
        if [ "$resumed" = 0 ]; then
          log "node state '$s' ($(sinfo -h -n "$NODE" -o %E)); resuming"
          scontrol update nodename="$NODE" state=resume || true; resumed=1
        fi ;;
    esac
    sleep 0.5
  done
  tail -n 20 "$SLURM_TEST_DIR/log/slurmctld.log" "$SLURM_TEST_DIR/log/slurmd.log" >&2 || true
  die "node $NODE not usable after ${WAIT_S}s (state '$(node_state || true)')"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0      # sourced (tests): define functions only
case "${1:-up}" in
  up|start) cmd_up ;;
  stop)     shift; cmd_stop "$@" ;;
  restart)  cmd_stop; cmd_up ;;
  status)   cmd_status ;;
  conf)     gen_conf ;;
  *) echo "usage: $0 [up|stop [--cancel-jobs]|restart|status|conf]" >&2; exit 2 ;;
esac
