#!/usr/bin/env bash
# Installs what the tests need when it is missing, or fails loudly.
# Tests never skip a missing component: they fail, so this script is the
# place where a fresh machine gets what it needs.
set -euo pipefail

need_pkgs=()
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v redis-cli    >/dev/null 2>&1 || need_pkgs+=(redis-tools)
# The settings page's browser tests (web/) drive Debian's headless chromium.
command -v chromium     >/dev/null 2>&1 || need_pkgs+=(chromium)

if [ ${#need_pkgs[@]} -eq 0 ]; then
  exit 0
fi

echo "test-deps: installing ${need_pkgs[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "test-deps: FAILED: ${need_pkgs[*]} missing and not root (run: sudo apt-get install -y ${need_pkgs[*]})" >&2
    exit 1
  fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/tmp/klassenfunk-apt.log 2>&1; then
  $SUDO apt-get update >>/tmp/klassenfunk-apt.log 2>&1 || true
  if ! $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >>/tmp/klassenfunk-apt.log 2>&1; then
    echo "test-deps: FAILED to install ${need_pkgs[*]}; see /tmp/klassenfunk-apt.log" >&2
    tail -20 /tmp/klassenfunk-apt.log >&2
    exit 1
  fi
fi
for c in redis-server redis-cli chromium; do
  command -v "$c" >/dev/null 2>&1 || { echo "test-deps: FAILED: $c still missing after install" >&2; exit 1; }
done
