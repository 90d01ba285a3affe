# Sourced by tools/setup.sh and deploy/smoke_test.sh: Debian packages installed the same way.
# apt_get waits for another apt or dpkg (an unattended upgrade, another make setup) to let go of
# its lock instead of failing on it (DPkg::Lock::Timeout covers dpkg's lock, not apt-get
# update's: that one is retried); installed says whether a package is installed.
APT_SUDO=""; [[ $(id -u) -ne 0 ]] && APT_SUDO=sudo
apt_get() {
  local out
  for _ in $(seq 1 90); do
    if out=$($APT_SUDO env DEBIAN_FRONTEND=noninteractive \
      apt-get -o DPkg::Lock::Timeout=600 "$@" 2>&1); then
      return 0
    fi
    if ! grep -qE 'Could not get lock|Unable to lock|Unable to acquire' <<<"$out"; then
      echo "$out" >&2
      return 1
    fi
    echo "apt is busy (another install holds its lock); waiting" >&2
    sleep 10
  done
  echo "$out" >&2
  return 1
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
