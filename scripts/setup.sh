#!/usr/bin/env bash
# Set up twin-imaging on a fresh Debian/Ubuntu machine: Debian packages, a virtualenv in .venv, the package.
#   bash scripts/setup.sh            # runtime only
#   bash scripts/setup.sh dev        # + test and lint tools, and the peers the tests check our DICOM against
# Idempotent: a second run installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"

# Debian packages: the reference DICOM tools the tests compare against (dcm2niix, dciodvfy, dcmtk), and the
# PostgreSQL server the twin store's tests start a throwaway instance of, and Orthanc (with its DICOMweb plugin),
# the PACS the integration tests start on free ports, and Chromium, the browser the twin page's tests drive.
apt_packages=()
if [[ "$extras" == *dev* ]]; then
  apt_packages+=(dcm2niix dcmtk dicom3tools postgresql orthanc orthanc-dicomweb chromium fonts-dejavu-core)
fi
# The venv module is a separate package on Debian.
"$python" -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

"$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "twin-imaging needs Python 3.11")'
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "setup: installing twin-imaging${extras:+ with [$extras]} into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
