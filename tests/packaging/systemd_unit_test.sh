#!/usr/bin/env bash
# The packaged systemd unit and its token drop-in: systemd-analyze verify
# accepts them (ExecStart pointed at the built binary), and no Environment=
# line relies on $VARIABLE expansion, which systemd does not do there (the
# token drop-in once passed ${CREDENTIALS_DIRECTORY} literally: the agent then
# exited 2 on every start and Restart= looped).
# Usage: systemd_unit_test.sh SOURCE_DIR GPUCLUSTER_BINARY
set -euo pipefail
source_dir=$1
binary=$2
unit=$source_dir/packaging/gpucluster-agent.service
dropin=$source_dir/packaging/gpucluster-agent-token.conf

failed=0
if grep -nE '^\s*Environment=.*\$\{?[A-Z_]+' "$unit" "$dropin"; then
  echo "FAIL: Environment= does not expand \$VARIABLES (use a specifier such as %d)" >&2
  failed=1
fi
# A node of a cluster keeps its id across restarts: in the directory systemd gives it.
grep -q '^StateDirectory=gpucluster$' "$unit" ||
  { echo "FAIL: the unit must give the agent a StateDirectory= for its node identity" >&2; failed=1; }
grep -q '^Environment=GPUCLUSTER_AGENT_ARGS=--token-file=%d/token$' "$dropin" ||
  { echo "FAIL: the drop-in must name the token by the credentials directory (%d)" >&2; failed=1; }

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP systemd-analyze verify: systemd-analyze is not installed (Debian package systemd)"
  exit $failed
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|/usr/local/bin/gpucluster|$binary|" "$unit" >"$work/gpucluster-agent.service"
mkdir "$work/gpucluster-agent.service.d"
cp "$dropin" "$work/gpucluster-agent.service.d/token.conf"
if ! output=$(SYSTEMD_UNIT_PATH="$work:" systemd-analyze verify --man=no "$work/gpucluster-agent.service" 2>&1) ||
  [[ -n $output ]]; then
  echo "FAIL: systemd-analyze verify:" >&2
  echo "$output" >&2
  failed=1
fi
[[ $failed == 0 ]] && echo "ok: the unit and its token drop-in verify"
exit $failed
