#!/usr/bin/env bash
# Installs every missing Debian package mfs needs (scripts/debian-packages.txt)
# and builds the project in build/.
#
#   bash scripts/setup.sh [--no-build]
#
# Environment: MFS_JOBS (parallel build jobs, default: number of CPUs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=1
for arg in "$@"; do
  case $arg in
    --no-build) build=0 ;;
    -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
    *) fail "unknown argument '$arg'" ;;
  esac
done

install_packages() {
  local wanted=() missing=() pkg
  mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$MFS_ROOT/scripts/debian-packages.txt")
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    say "all ${#wanted[@]} Debian packages are installed"
    return
  fi
  ((EUID == 0)) || fail "missing packages (${missing[*]}); run as root to install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
}

install_packages
if ((build)); then
  say "building in build/"
  cmake -S "$MFS_ROOT" -B "$MFS_ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$MFS_ROOT/build" -j "$MFS_JOBS"
fi
