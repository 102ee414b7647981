#!/usr/bin/env bash
# Installs the Debian packages the tests drive for real: Chromium (browser
# tests through Playwright), PostgreSQL (the second database), OpenLDAP's slapd
# and ldap-utils (the LDAP authenticator's tests start their own slapd), SLURM
# and munge (scripts/slurm-up.sh starts the cluster; it installs them itself when
# run alone, but here they come in the same apt-get run as the rest: one package
# list update and one dpkg run, not two).
# Idempotent: does nothing when everything is installed. Run as root.
set -euo pipefail

PACKAGES=(chromium postgresql sudo slapd ldap-utils slurm-wlm munge)

missing=()
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "test packages already installed: ${PACKAGES[*]}"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root to install: ${missing[*]}" >&2; exit 1; }
# keep dpkg from starting services (no init system here); the tests start their own
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
# slapd asks for a domain and an admin password: skip its own directory, the
# tests generate theirs
if command -v debconf-set-selections >/dev/null; then
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
fi
apt-get -o DPkg::Lock::Timeout=300 update -q
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
