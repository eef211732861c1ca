#!/usr/bin/env bash
# `ray up` / `ray submit` / `ray down` of cluster/local-manual.yaml, for real, against this machine
# over SSH: an sshd of our own on a free loopback port (a throw-away host key and user key, keys
# only), and the shipped YAML with HEAD_IP = 127.0.0.1, no workers, this user, that key and a
# ProxyCommand to the port. `ray up` syncs the repo to ~/ftcl and runs the YAML's own setup
# (`make setup`: a new venv there) and start commands; `ray submit` runs the AppleRetrieval grid at
# 2k steps, seed 0 (4 π* and 4 fine-tuning trials), on the head with `ftcl run --address auto`;
# `ray down` stops Ray; then the sshd is stopped. Never while other Ray work runs here: the YAML's
# `ray stop` stops every Ray process of this machine.
#   cluster/try_ssh_local.sh            # needs sshd, ssh, nc, rsync (Debian: openssh-server netcat-openbsd rsync)
# ~/ftcl must not exist (the script makes it and removes it at the end). Measured: cluster/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
for tool in /usr/sbin/sshd ssh nc rsync; do
  command -v "$tool" >/dev/null || { echo "try_ssh_local.sh: $tool is missing (apt-get install openssh-server netcat-openbsd rsync)" >&2; exit 2; }
done
if pgrep -x raylet >/dev/null || pgrep -f "ray/core/src/ray/raylet/raylet" >/dev/null; then
  echo "try_ssh_local.sh: Ray runs on this machine; the YAML's \`ray stop\` would stop it: wait until it ends" >&2
  exit 2
fi
if [ -e ~/ftcl ]; then
  echo "try_ssh_local.sh: ~/ftcl exists; the YAML syncs the repo there: move it away first" >&2
  exit 2
fi
ray_bin=${RAY_BIN:-$repo/.venv/bin}   # the `ray` CLI on this (the launching) machine
work=$(mktemp -d /tmp/ftcl_ssh.XXXXXX)
cp -p ~/.bashrc "$work/bashrc.before" 2>/dev/null || touch "$work/bashrc.none"   # the YAML's setup appends to it
port=$("$ray_bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
ssh-keygen -q -t ed25519 -N "" -f "$work/user_key"
ssh-keygen -q -t ed25519 -N "" -f "$work/host_key"
cp "$work/user_key.pub" "$work/authorized_keys"
cat > "$work/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PidFile $work/sshd.pid
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log"
cleanup() {
  "$ray_bin/ray" down -y "$work/cluster.yaml" >>"$work/ray_down.log" 2>&1 || true
  [ -f "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2>/dev/null || true
  rm -rf ~/ftcl
  if [ -f "$work/bashrc.before" ]; then cp -p "$work/bashrc.before" ~/.bashrc; else rm -f ~/.bashrc; fi
  echo "logs in $work"
}
trap cleanup EXIT
# The shipped YAML, filled in: the head is this machine, reached through the sshd above.
sed -e "s/HEAD_IP/127.0.0.1/" -e "s/worker_ips: \[WORKER_IP_1\].*/worker_ips: []/" \
    -e "s/ssh_user: USER.*/ssh_user: $(whoami)/" \
    -e "s|  # ssh_private_key: ~/.ssh/id_rsa|  ssh_private_key: $work/user_key\n  ssh_proxy_command: nc 127.0.0.1 $port|" \
    -e "s/^cluster_name: ftcl$/cluster_name: ftcl-ssh-$port/" \
    cluster/local-manual.yaml > "$work/cluster.yaml"
start=$(date +%s)
echo "[try_ssh_local] ray up (sshd on 127.0.0.1:$port; setup runs make setup in ~/ftcl)"
"$ray_bin/ray" up -y --no-config-cache "$work/cluster.yaml" > "$work/ray_up.log" 2>&1 \
  || { tail -40 "$work/ray_up.log" >&2; exit 1; }
up=$(date +%s)
echo "[try_ssh_local] ray up took $((up - start)) s; ray submit of the AppleRetrieval grid at 2k steps, seed 0"
cat > "$work/grid.py" <<'EOF'
import subprocess, sys
sys.exit(subprocess.call([sys.argv[1], "-m", "ftcl.cli", "run", "tune_configs/toys/apple_retrieval.yaml",
                          "--address", "auto", "--set", "budget.env_steps=2000", "--set", "seeds=[0]"],
                         cwd=sys.argv[2]))
EOF
"$ray_bin/ray" submit "$work/cluster.yaml" "$work/grid.py" -- '~/ftcl/.venv/bin/python' '~/ftcl' \
  > "$work/ray_submit.log" 2>&1 || { tail -40 "$work/ray_submit.log" >&2; exit 1; }
submitted=$(date +%s)
grep -E "^\[ftcl\]|ftcl: error" "$work/ray_submit.log" | tail -4
echo "[try_ssh_local] ray submit took $((submitted - up)) s; ray down"
"$ray_bin/ray" down -y "$work/cluster.yaml" > "$work/ray_down.log" 2>&1
if grep -q "command not found" "$work/ray_down.log" || pgrep -f "$HOME/ftcl/.venv" >/dev/null; then
  echo "[try_ssh_local] ray down did not stop the head's Ray (see $work/ray_down.log)" >&2
  pkill -f "$HOME/ftcl/.venv" || true
  exit 1
fi
echo "[try_ssh_local] ray down took $(( $(date +%s) - submitted )) s; all done in $(( $(date +%s) - start )) s"
