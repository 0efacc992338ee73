# Sourced by tests/run.sh and examples/run.sh: makes sure the Debian packages the build needs are
# installed. As root it runs apt-get; otherwise it prints the exact command and exits 1.
MAMBATRACK_DEBS="cmake g++ ninja-build catch2 libeigen3-dev nlohmann-json3-dev libyaml-cpp-dev zlib1g-dev"

ensure_packages() {
  local missing=() p
  for p in $MAMBATRACK_DEBS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}" >&2
    echo "run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
