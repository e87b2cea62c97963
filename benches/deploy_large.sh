#!/usr/bin/env bash
# Deploys a generated 50,000-file site with the release `halo` against a local `halo serve`,
# then redeploys it with one file changed. Reports wall time, files/s and MB/s, the server's
# peak RSS, and the client's SHA-256 hashing rate next to OpenSSL's on the same bytes (the
# SHA-NI yardstick; coreutils sha256sum is no yardstick). A benchmark, not a test.
#
#   bash benches/deploy_large.sh [FILES] [BIG_FILES]   defaults: 50000 files, 100 of 1 MiB
#   SITE=/path/to/tree bash benches/deploy_large.sh    a real tree instead, e.g. the Rust docs:
#       SITE=$(rustc --print sysroot)/share/doc/rust/html (when the toolchain ships them)
#   BACKENDS="sqlite pg" bash benches/deploy_large.sh  both metadata backends, side by side
#       (pg: a fresh database on the cluster of HALO_TEST_DATABASE_URL, see .ci/postgres.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-50000}
big=${2:-100}

cargo build --release --quiet
halo=$PWD/target/release/halo
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

if [ -n "${SITE:-}" ]; then
    echo "copying $SITE"
    cp -r "$SITE" "$work/site"
    files=$(find "$work/site" -type f | wc -l)
else
echo "generating $files files ($big of 1 MiB, the rest 1-8 KiB) in $work/site"
python3 - "$work/site" "$files" "$big" <<'PY'
import os, random, sys
root, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(42)
for i in range(n):
    d = os.path.join(root, f"d{i % 200:03d}", f"s{i % 7}")
    os.makedirs(d, exist_ok=True)
    size = 1 << 20 if i < big else random.randint(1024, 8192)
    with open(os.path.join(d, f"f{i:06d}.html"), "wb") as f:
        f.write(os.urandom(size))
PY
fi
bytes=$(du -sb "$work/site" | cut -f1)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for backend in ${BACKENDS:-sqlite}; do
db_args=()
if [ "$backend" = pg ]; then
    : "${HALO_TEST_DATABASE_URL:?pg needs HALO_TEST_DATABASE_URL (bash .ci/postgres.sh start DIR)}"
    name=bench_$(date +%s%N)
    psql "$HALO_TEST_DATABASE_URL" -qc "CREATE DATABASE $name"
    db_args=(--database-url "${HALO_TEST_DATABASE_URL%/*}/$name")
fi
rm -rf "$work/data" "$work/cache"
echo "== metadata: $backend"
api=127.0.0.1:$(port)
edge=127.0.0.1:$(port)
HALO_ADMIN_TOKEN=bench-token-0123456789 "$halo" serve --data-dir "$work/data" "${db_args[@]}" \
    --api-listen "$api" --edge-listen "$edge" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${api%:*}/${api#*:}") 2>/dev/null && break; sleep 0.1; done

export HALO_API=http://$api HALO_TOKEN=bench-token-0123456789 XDG_CACHE_HOME=$work/cache
run() {
    local t0 t1
    t0=$(date +%s%N)
    "$halo" deploy "$work/site" --project bench --json "$@" > "$work/out.json"
    t1=$(date +%s%N)
    python3 -c "print(($t1 - $t0) / 1e9)" > "$work/wall"
}
report() {
    python3 - "$work/out.json" "$(cat "$work/wall")" "$files" "$bytes" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); wall = float(sys.argv[2]); n = int(sys.argv[3]); b = int(sys.argv[4])
t = r["timings_ms"]
print(f"{sys.argv[5]}: wall {wall:.1f} s, {n / wall:,.0f} files/s, {b / wall / 1e6:.1f} MB/s of site; "
      f"uploaded {r['uploaded_files']} files ({r['uploaded_bytes'] / 1e6:.1f} MB); "
      f"hash {t['hash']} ms ({r['hashed_bytes'] / 1e6:.1f} MB read), create {t['create']} ms, "
      f"upload {t['upload']} ms, ready {t['ready']} ms")
if r["hashed_bytes"] and t["hash"]:
    print(f"  client hashing rate: {r['hashed_bytes'] / t['hash'] / 1e3 / 1024:.2f} GiB/s (walk+read+hash, all cores)")
PY
}
run --no-hash-cache; report "first deploy  "
first=$(find "$work/site" -type f | sort | head -1 || true)
size=$(stat -c %s "$first")
echo "changed" >> "$first"
run; report "one changed   "
run --no-hash-cache; report "rehash, no-op "

echo "server peak RSS: $(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$server/status")"
kill "$server"; wait "$server" 2>/dev/null || true
# Restore the changed file so every backend deploys the same trees.
truncate -s "$size" "$first"
done
echo "OpenSSL SHA-256 over the same bytes, one core (cat | openssl dgst; the SHA-NI yardstick):"
t0=$(date +%s%N)
find "$work/site" -type f -print0 | xargs -0 cat | openssl dgst -sha256 > /dev/null
t1=$(date +%s%N)
python3 -c "print(f'  {$bytes / (($t1 - $t0) / 1e9) / 2**30:.2f} GiB/s ({$bytes / 1e6:.0f} MB in {($t1 - $t0) / 1e9:.2f} s)')"
echo "OpenSSL SHA-256, one core, 256 KiB blocks in memory:"
openssl speed -bytes 262144 -seconds 2 sha256 2>/dev/null | tail -1
echo "cores: $(nproc)"
