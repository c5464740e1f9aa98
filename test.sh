#!/usr/bin/env bash
# Run pacsmig's tests on a fresh Debian machine: installs Orthanc, DCMTK, Chromium and a
# .venv first. Arguments go to pytest (e.g. ./test.sh -m unit, ./test.sh -x).
set -euo pipefail
cd "$(dirname "$0")"
PACSMIG_WITH_BROWSER=1 ./scripts/bootstrap.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
