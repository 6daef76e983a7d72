#!/usr/bin/env bash
# `npm pack` must give an installable package: install the tarball into a fresh
# project, import it as ESM, check the exports and that the type declarations
# compile under --strict. Needs no daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
sdk="$PWD"
tmp="$(mktemp -d /tmp/runta-ts-pack.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
tgz="$(npm pack --silent --pack-destination "$tmp" 2>/dev/null | tail -n 1)"
test -f "$tmp/$tgz" || { echo "pack-check: npm pack produced no tarball" >&2; exit 1; }
# Only the built files, the README and package.json ship.
listing="$(tar -tzf "$tmp/$tgz")"
for want in package/package.json package/README.md package/dist/index.js package/dist/index.d.ts package/dist/websocket.js; do
  grep -qx "$want" <<<"$listing" || { echo "pack-check: $want missing from $tgz" >&2; exit 1; }
done
if grep -E '^package/(src|test|node_modules|build-test)/' <<<"$listing" >/dev/null; then
  echo "pack-check: sources or tests leaked into $tgz" >&2; exit 1
fi
mkdir -p "$tmp/app"
cd "$tmp/app"
cat > package.json <<'JSON'
{ "name": "runta-pack-check", "version": "1.0.0", "private": true, "type": "module" }
JSON
npm install --silent --no-audit --no-fund "$tmp/$tgz" >/dev/null
deps="$(node -e 'const p=require("./node_modules/@runta/runta-sdk/package.json");console.log(Object.keys(p.dependencies||{}).length)')"
[ "$deps" = 0 ] || { echo "pack-check: the package has runtime dependencies" >&2; exit 1; }
cat > check.mjs <<'JS'
import { Runta, Runtime, ExecResult, RuntaError, NotFoundError, ConflictError, AuthenticationError,
         PermissionDeniedError, InvalidArgumentError, ResourceExhaustedError, UnavailableError } from "@runta/runta-sdk";
const r = new Runta({ endpoint: "http://127.0.0.1:1", token: "rt_x" });
if (typeof r.runtimes.create !== "function" || typeof r.runtimes.list !== "function") throw new Error("no runtimes API");
if (typeof r.checkpoints.list !== "function" || typeof r.checkpoints.delete !== "function") throw new Error("no checkpoints API");
for (const c of [NotFoundError, ConflictError, AuthenticationError, PermissionDeniedError, InvalidArgumentError, ResourceExhaustedError, UnavailableError])
  if (!(new c({ code: "x", message: "m" }) instanceof RuntaError)) throw new Error(c.name);
const e = new ExecResult({ exit_code: 3, stdout: "o", stderr: "", stdout_truncated: false, stderr_truncated: false, duration_ms: 1, timed_out: false });
if (e.exitCode !== 3 || e.stdoutText !== "o") throw new Error("ExecResult");
if (typeof Runtime !== "function") throw new Error("Runtime");
console.log("import ok");
JS
node check.mjs
# The declarations type-check in a strict consumer project.
cat > check.ts <<'TS'
import { Runta, type Checkpoint, type ExecResult, type RuntimeInfo } from "@runta/runta-sdk";
export async function demo(): Promise<number> {
  const runta = new Runta();
  const rt = await runta.runtimes.create("worker", { vcpus: 2, memoryMiB: 2048 });
  const info: RuntimeInfo = rt.cachedInfo;
  const res: ExecResult = await rt.exec(["true"], { timeoutSecs: 5 });
  const cp: Checkpoint = await rt.checkpoints.create("ready");
  const fork = await runta.runtimes.create("worker-2", { checkpointId: cp });
  return res.exitCode + info.revision + cp.sizeBytes + fork.cachedInfo.revision;
}
TS
cat > tsconfig.json <<'JSON'
{ "compilerOptions": { "strict": true, "noEmit": true, "module": "NodeNext", "moduleResolution": "NodeNext",
  "target": "ES2022", "lib": ["ES2022"], "types": ["node"], "typeRoots": ["SDK/node_modules/@types"], "skipLibCheck": false } }
JSON
sed -i "s#SDK#$sdk#" tsconfig.json
node "$sdk/node_modules/typescript/bin/tsc" -p tsconfig.json
echo "pack-check: $tgz installs, imports and type-checks"
