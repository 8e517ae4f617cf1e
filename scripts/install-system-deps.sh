#!/usr/bin/env bash
# Installs the Debian packages the tests and tools need, only when a binary is missing.
set -euo pipefail

declare -A PACKAGE_FOR=(
  [redis-server]=redis-server
  [nginx]=nginx-light
  [prometheus]=prometheus
  [promtool]=prometheus
  [chromium]=chromium
  [node]=nodejs
  [npm]=npm
  # The outbox tests start their own PostgreSQL from Debian's binaries (not on PATH).
  [/usr/lib/postgresql/15/bin/postgres]=postgresql-15
)
missing=()
for binary in "${!PACKAGE_FOR[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${PACKAGE_FOR[$binary]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing Debian packages: ${packages[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install ${packages[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "installed: ${packages[*]}"
