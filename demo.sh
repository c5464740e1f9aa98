#!/usr/bin/env bash
# The pacsmig demo on a fresh Debian machine: installs Orthanc, DCMTK and a .venv, starts two
# Orthanc servers on free loopback ports, migrates sample studies between them with
# plan / approve / apply / verify / report, prints where the report is, and stops the servers.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py
