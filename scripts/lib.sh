# shellcheck shell=bash disable=SC2034
# Shared by the scripts in this folder (sourced, not run).

MFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MFS_JOBS=${MFS_JOBS:-$(nproc)}
# ccache (CMakeLists.txt uses it when installed): paths relative to the tree,
# so that a clone elsewhere (CI's) reuses what this one compiled.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$MFS_ROOT}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}

say() { printf '\n== %s\n' "$*"; }

fail() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  exit 1
}
