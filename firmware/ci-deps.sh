#!/usr/bin/env bash
# Installs the Debian packages that `make -C firmware check` and `make -C firmware check-sim`
# need, and nothing else. Idempotent: does nothing when all are installed. Debian 12 (bookworm)
# package names; the ESP8266 Arduino core itself is not packaged and is not needed here.
set -euo pipefail

PACKAGES=(
  # make check: host unit tests (g++ brings gcc, libasan, libubsan) ...
  make g++ gcc
  # ... the core and the tests cross-compiled for the ESP8266's lx106 CPU ...
  gcc-xtensa-lx106 binutils-xtensa-lx106 picolibc-xtensa-lx106-elf
  # ... and run under QEMU (qemu-system-xtensa).
  qemu-system-misc
  # make check-sim: the simulator's MQTT library, a broker, clients, and openssl for the
  # test certificates.
  libmosquitto-dev mosquitto mosquitto-clients openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
# --missing: print the missing packages (for ./xcaddy.sh test) and install nothing.
if [ "${1:-}" = "--missing" ]; then
  echo "${missing[*]}"
  exit 0
fi
if [ "${#missing[@]}" -eq 0 ]; then
  echo "firmware/ci-deps.sh: all packages installed"
  exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "firmware/ci-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
