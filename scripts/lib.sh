# shellcheck shell=bash disable=SC2034
# Shared by the scripts in this folder (sourced, not run).

MFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MFS_JOBS=${MFS_JOBS:-$(nproc)}

say() { printf '\n== %s\n' "$*"; }

fail() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  exit 1
}
