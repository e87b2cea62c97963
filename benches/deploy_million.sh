#!/usr/bin/env bash
# A generated site of 1,000,000 tiny files, deployed as a .tar.gz through curl (generating a
# million files on disk alone takes longer here than the deploy should), then one change
# redeployed as base + delta. Reports wall time, server CPU seconds and peak RSS, files/s.
# A benchmark, not a test.
#
#   bash benches/deploy_million.sh [FILES]          default 1000000
#   STORAGE=s3 bash benches/deploy_million.sh ...   against the Garage of .ci/garage.sh (env)
#   TAR=/tmp/million.tar.gz ...                      keep the generated archive for the next run
#   HALO_BIN=/tmp/halo-old ...                       another build instead of building this one
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-1000000}

# HALO_BIN=path runs another build (e.g. an older one, for a before/after pair).
if [ -z "${HALO_BIN:-}" ]; then cargo build --release --quiet; fi
halo=${HALO_BIN:-$PWD/target/release/halo}
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# TAR=path keeps the generated archive there and reuses it on the next run.
tar=${TAR:-$work/site.tar.gz}
if [ -s "$tar" ]; then echo "reusing $tar"; else
echo "generating $files files (16-200 bytes each) as $tar"
t0=$(date +%s%N)
python3 - "$tar" "$files" <<'PY'
import io, random, sys, tarfile
out, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
with tarfile.open(out, "w:gz", compresslevel=1) as t:
    for i in range(n):
        data = (f"file {i} " * random.randint(2, 25)).encode()
        info = tarfile.TarInfo(f"d{i % 1000:03d}/f{i:07d}.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
PY
t1=$(date +%s%N)
python3 -c "print(f'  generated in {($t1 - $t0) / 1e9:.1f} s, {$(stat -c %s "$tar") / 1e6:.1f} MB')"
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=127.0.0.1:$(port)
edge=127.0.0.1:$(port)
store_args=()
if [ "${STORAGE:-fs}" = s3 ]; then
    : "${HALO_TEST_S3_ENDPOINT:?s3 needs the Garage of .ci/garage.sh (source its env)}"
    store_args=(--storage-backend s3 --s3-endpoint "$HALO_TEST_S3_ENDPOINT" --s3-region "$HALO_TEST_S3_REGION"
        --s3-bucket "$HALO_TEST_S3_BUCKET" --s3-force-path-style --s3-prefix "bench-$(date +%s%N)")
fi
(cd "$work" && HALO_ADMIN_TOKEN=bench-token-0123456789 exec "$halo" serve --data-dir "$work/data" \
    "${store_args[@]}" --api-listen "$api" --edge-listen "$edge") > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${api%:*}/${api#*:}") 2>/dev/null && break; sleep 0.1; done
auth=(-H "authorization: Bearer bench-token-0123456789")
curl -sf "${auth[@]}" -H 'content-type: application/json' -d '{"name":"million"}' "http://$api/v1/projects" > /dev/null

cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
wait_ready() {
    while :; do
        s=$(curl -sf "${auth[@]}" "http://$api/v1/deployments/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
        [ "$s" = ready ] && return
        [ "$s" = error ] && { echo "deployment $1 failed"; exit 1; }
        sleep 0.05
    done
}
row() { # label t0 t1 cpu0
    python3 -c "w = ($3 - $2) / 1e9; print(f'$1: wall {w:.2f} s, {$files / w:,.0f} files/s, server CPU {$(cpu_of "$server") - $4:.1f} s')"
}

c0=$(cpu_of "$server"); t0=$(date +%s%N)
# The client is curl: its CPU seconds and peak RSS from GNU time.
id=$(/usr/bin/time -f '%U %S %M' -o "$work/client" curl -sf "${auth[@]}" --data-binary @"$tar" \
    "http://$api/v1/deployments/archive?project=million&target=production" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
wait_ready "$id"
t1=$(date +%s%N)
row "first deploy (tar.gz via curl)" "$t0" "$t1" "$c0"
read -r cu cs crss < "$work/client"
python3 -c "w = ($t1 - $t0) / 1e9; print(f'  {$(stat -c %s "$tar") / 2**20 / w:.2f} MiB/s of archive; client (curl) CPU {$cu + $cs:.2f} s, peak RSS {$crss / 1024:.0f} MiB')"
echo "  served: $(curl -sf -H 'host: million.halo.localhost' "http://$edge/d007/f0000007.txt" | head -c 40)"
echo "  server peak RSS so far: $(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$server/status"), now $(awk '/VmRSS/ {print $2 / 1024 " MiB"}' "/proc/$server/status")"

c0=$(cpu_of "$server"); t0=$(date +%s%N)
hash=$(printf 'changed' | sha256sum | cut -d' ' -f1)
curl -sf "${auth[@]}" -X PUT --data-binary 'changed' "http://$api/v1/files/$hash" > /dev/null
id2=$(curl -sf "${auth[@]}" -H 'content-type: application/json' \
    -d "{\"project_id\":\"$(curl -sf "${auth[@]}" "http://$api/v1/deployments/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["project_id"])')\",\"base\":\"$id\",\"target\":\"production\",\"files\":{\"d000/f0000000.txt\":\"$hash\"}}" \
    "http://$api/v1/deployments" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
wait_ready "$id2"
t1=$(date +%s%N)
row "one change (base + delta)" "$t0" "$t1" "$c0"
curl -sf "${auth[@]}" "http://$api/v1/deployments/$id2/logs" | python3 -c "$(cat <<'PY'
import json, sys
events = json.load(sys.stdin)["data"]
print("  phases:", ", ".join(f"{e['phase']} {e['duration_ms']} ms" for e in events if e.get("duration_ms") is not None))
PY
)"
echo "  served: $(curl -sf -H 'host: million.halo.localhost' "http://$edge/d000/f0000000.txt")"
echo "server peak RSS: $(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$server/status")"
