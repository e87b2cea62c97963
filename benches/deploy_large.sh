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
#   STORAGE=s3 ...  blobs in the Garage of .ci/garage.sh (source its env first)
#   ARCHIVE=1 ...   also the same tree as a .tar.gz through curl (POST /v1/deployments/archive;
#                   not for a build labelled `before`, which has no such endpoint)
#   BINS="before=/tmp/halo-old now=target/release/halo" ...  several builds side by side
#       (default: the one just built). Every row gives wall time, client and server CPU
#       seconds, both peak RSS; the yardstick row writes the same bytes into one file with
#       fsync (dd conv=fsync), the floor a first deploy is measured against.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-50000}
big=${2:-100}

cargo build --release --quiet
bins=${BINS:-now=$PWD/target/release/halo}
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
echo "yardstick: the same $((bytes / 1000000)) MB written sequentially into one file, fsync:"
t0=$(date +%s%N)
find "$work/site" -type f -print0 | xargs -0 cat | dd of="$work/one-file" bs=1M conv=fsync status=none
t1=$(date +%s%N)
rm -f "$work/one-file"
python3 -c "print(f'  dd conv=fsync: {($t1 - $t0) / 1e9:.2f} s')"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
for bin in $bins; do
label=${bin%%=*}
halo=${bin#*=}
for backend in ${BACKENDS:-sqlite}; do
db_args=()
if [ "$backend" = pg ]; then
    : "${HALO_TEST_DATABASE_URL:?pg needs HALO_TEST_DATABASE_URL (bash .ci/postgres.sh start DIR)}"
    name=bench_$(date +%s%N)
    psql "$HALO_TEST_DATABASE_URL" -qc "CREATE DATABASE $name"
    db_args=(--database-url "${HALO_TEST_DATABASE_URL%/*}/$name")
fi
store_args=()
if [ "${STORAGE:-fs}" = s3 ]; then
    : "${HALO_TEST_S3_ENDPOINT:?s3 needs the Garage of .ci/garage.sh (source its env)}"
    store_args=(--storage-backend s3 --s3-endpoint "$HALO_TEST_S3_ENDPOINT" --s3-region "$HALO_TEST_S3_REGION"
        --s3-bucket "$HALO_TEST_S3_BUCKET" --s3-force-path-style --s3-prefix "bench-$(date +%s%N)")
fi
rm -rf "$work/data" "$work/cache"
echo "== $label, metadata: $backend"
api=127.0.0.1:$(port)
edge=127.0.0.1:$(port)
# From the work dir: the repo's config/halo.toml is for this build, not for older ones.
(cd "$work" && HALO_ADMIN_TOKEN=bench-token-0123456789 exec "$halo" serve --data-dir "$work/data" "${db_args[@]}" "${store_args[@]}" \
    --api-listen "$api" --edge-listen "$edge") > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${api%:*}/${api#*:}") 2>/dev/null && break; sleep 0.1; done

export HALO_API=http://$api HALO_TOKEN=bench-token-0123456789 XDG_CACHE_HOME=$work/cache
run() {
    local t0 t1 s0
    s0=$(cpu_of "$server")
    t0=$(date +%s%N)
    /usr/bin/time -f "%U %S %M" -o "$work/client" "$halo" deploy "$work/site" --project bench --json "$@" > "$work/out.json"
    t1=$(date +%s%N)
    python3 -c "print(($t1 - $t0) / 1e9)" > "$work/wall"
    python3 -c "print($(cpu_of "$server") - $s0)" > "$work/server_cpu"
}
report() {
    python3 - "$work/out.json" "$(cat "$work/wall")" "$files" "$bytes" "$1" "$(cat "$work/client")" "$(cat "$work/server_cpu")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); wall = float(sys.argv[2]); n = int(sys.argv[3]); b = int(sys.argv[4])
cu, cs, crss = sys.argv[6].split(); scpu = float(sys.argv[7])
t = r["timings_ms"]
print(f"{sys.argv[5]}: wall {wall:.2f} s, {n / wall:,.0f} files/s, {b / wall / 1e6:.1f} MB/s of site; "
      f"client CPU {float(cu) + float(cs):.1f} s (peak RSS {int(crss) // 1024} MiB), server CPU {scpu:.1f} s; "
      f"uploaded {r['uploaded_files']} files ({r['uploaded_bytes'] / 1e6:.1f} MB); "
      f"hash {t['hash']} ms ({r['hashed_bytes'] / 1e6:.1f} MB read), create {t['create']} ms, "
      f"upload {t['upload']} ms, ready {t['ready']} ms")
if r["hashed_bytes"] and t["hash"]:
    print(f"  client hashing rate: {r['hashed_bytes'] / t['hash'] / 1e3 / 1024:.2f} GiB/s (walk+read+hash, all cores)")
PY
}
run --no-hash-cache; report "first deploy  "
run; report "nothing changed"
first=$(find "$work/site" -type f | sort | head -1 || true)
size=$(stat -c %s "$first")
echo "changed" >> "$first"
run; report "one changed   "
run --no-hash-cache; report "rehash, no-op "

if [ -n "${ARCHIVE:-}" ] && [ "$label" != before ]; then
    [ -f "$work/site.tar.gz" ] || tar -C "$work/site" -czf "$work/site.tar.gz" .
    name=bench-archive-$label-$backend
    curl -sf -H "authorization: Bearer $HALO_TOKEN" -H 'content-type: application/json' \
        -d "{\"name\":\"$name\"}" "$HALO_API/v1/projects" > /dev/null
    s0=$(cpu_of "$server"); t0=$(date +%s%N)
    id=$(curl -sf -H "authorization: Bearer $HALO_TOKEN" --data-binary @"$work/site.tar.gz" \
        "$HALO_API/v1/deployments/archive?project=$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    until curl -sf -H "authorization: Bearer $HALO_TOKEN" "$HALO_API/v1/deployments/$id" | grep -q '"status":"ready"'; do sleep 0.05; done
    t1=$(date +%s%N)
    python3 -c "print(f'tar.gz via curl: wall {($t1 - $t0) / 1e9:.2f} s ({$(stat -c %s "$work/site.tar.gz") / 1e6:.0f} MB archive), server CPU {$(cpu_of "$server") - $s0:.1f} s')"
fi
echo "server peak RSS: $(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$server/status")"
kill "$server"; wait "$server" 2>/dev/null || true
# Restore the changed file so every backend deploys the same trees.
truncate -s "$size" "$first"
done
done
echo "OpenSSL SHA-256 over the same bytes, one core (cat | openssl dgst; the SHA-NI yardstick):"
t0=$(date +%s%N)
find "$work/site" -type f -print0 | xargs -0 cat | openssl dgst -sha256 > /dev/null
t1=$(date +%s%N)
python3 -c "print(f'  {$bytes / (($t1 - $t0) / 1e9) / 2**30:.2f} GiB/s ({$bytes / 1e6:.0f} MB in {($t1 - $t0) / 1e9:.2f} s)')"
echo "OpenSSL SHA-256, one core, 256 KiB blocks in memory:"
speed=$(openssl speed -bytes 262144 -seconds 2 sha256 2>/dev/null | tail -1)
echo "$speed"
# The hashing phase's yardstick: the SHA-NI limit on every core plus a bare read of every
# file (one process, the page cache as warm as the hashing phase found it).
t0=$(date +%s%N)
find "$work/site" -type f -print0 | xargs -0 cat > /dev/null
t1=$(date +%s%N)
python3 - "$bytes" "$t0" "$t1" "$(nproc)" "$(echo "$speed" | awk '{print $NF}')" <<'PY'
import sys
b, t0, t1, cores, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
read = (t1 - t0) / 1e9
limit = b / (float(rate.rstrip("k")) * 1000 * cores)
print(f"bare read of every file: {read:.2f} s; SHA-NI limit on {cores} cores: {limit:.2f} s; "
      f"hashing phase target (2x their sum): {2 * (read + limit):.2f} s")
PY
echo "cores: $(nproc)"
