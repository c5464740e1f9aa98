#!/usr/bin/env bash
# Install what pacsmig's demo and tests need on a fresh Debian machine, then the package
# itself into ./.venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || need_apt+=(orthanc)
command -v storescu >/dev/null 2>&1 || need_apt+=(dcmtk)
if [ "${PACSMIG_WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  need_apt+=(chromium)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian starts a system Orthanc on 4242/8042 when the package is installed; pacsmig's demo and
# tests run their own on free ports and do not need it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
  echo "note: the system Orthanc service is running; pacsmig does not use it"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# A regular (not editable) install: the demo and tests use pacsmig as a user gets it.
.venv/bin/python -m pip install -q ".[test]" >/dev/null
# The version number does not change with every commit: force the checkout's code in.
.venv/bin/python -m pip install -q --force-reinstall --no-deps . >/dev/null
echo "pacsmig $(.venv/bin/pacsmig --version) installed in .venv"
