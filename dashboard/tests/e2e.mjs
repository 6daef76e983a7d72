// End-to-end test of the dashboard against a real runtad (see dashboard/run-tests.sh).
// Starts a fresh daemon (scripts/test-daemon.sh, as every suite), drives Debian's Chromium with playwright-core, and deletes
// every runtime of its tenant before stopping the daemon.
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, existsSync, writeFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const dashboard = resolve(here, '..');
const repo = resolve(dashboard, '..');
const results = join(dashboard, 'test-results');
mkdirSync(results, { recursive: true });

// Where cargo puts the binaries: CARGO_TARGET_DIR (relative to the repository), else ./target;
// scripts/test-daemon.sh finds runtad there (or RUNTAD_BIN).
const TARGET = resolve(repo, process.env.CARGO_TARGET_DIR || 'target');
const DAEMON_SCRIPT = join(repo, 'scripts/test-daemon.sh');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const STATIC_AGENT = join(TARGET, 'x86_64-unknown-linux-gnu/release/runta-agent');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let step = 'setup';
const log = (msg) => console.log(`[e2e] ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

async function http(method, path, token, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!res.ok) throw new Error(`${method} ${path} → ${res.status} ${text}`);
  return json;
}

// ------------------------------------------------------- egress test hosts
// HTTP servers in a network namespace this test makes (198.18.64.2 = allowed.test,
// 198.18.64.3 = other.test, named in the daemon's --egress-hosts file); nothing
// leaves the machine. Needs root; without it the egress step says it is skipped.
const NET = 64;
const EGRESS_HOSTS = join(results, 'egress-hosts');
writeFileSync(EGRESS_HOSTS, `198.18.${NET}.2 allowed.test\n198.18.${NET}.3 other.test\n`);
const nsTag = String(process.pid % 10000);
const NS = `egdash-${nsTag}`;
const VETH = `egdh${nsTag}`;
let nsServer = null;
const sh = (c) => execFileSync('sh', ['-c', c], { stdio: ['ignore', 'ignore', 'inherit'] });
const quiet = (c) => {
  try {
    execFileSync('sh', ['-c', c], { stdio: 'ignore' });
  } catch {}
};
const canNetns = process.getuid?.() === 0;
function testHostsUp() {
  const peer = `egdp${nsTag}`;
  quiet(`ip netns del ${NS}`);
  quiet(`ip link del ${VETH}`);
  sh(`ip netns add ${NS} && ip link add ${VETH} type veth peer name ${peer} && ip link set ${peer} netns ${NS}`);
  sh(`ip addr add 198.18.${NET}.1/24 dev ${VETH} && ip link set ${VETH} up`);
  sh(`ip -n ${NS} addr add 198.18.${NET}.2/24 dev ${peer} && ip -n ${NS} addr add 198.18.${NET}.3/24 dev ${peer} && ip -n ${NS} link set ${peer} up && ip -n ${NS} link set lo up && ip -n ${NS} route add default via 198.18.${NET}.1`);
  const server = [
    'import http.server, socketserver',
    'class H(http.server.BaseHTTPRequestHandler):',
    '    def do_GET(self):',
    '        b = ("hello %s\\n" % self.connection.getsockname()[0]).encode()',
    '        self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)',
    '    def log_message(self, *a): pass',
    'class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True; allow_reuse_address = True',
    'S(("0.0.0.0", 80), H).serve_forever()',
  ].join('\n');
  nsServer = spawn('ip', ['netns', 'exec', NS, 'python3', '-c', server], { stdio: 'ignore' });
}
function testHostsDown() {
  nsServer?.kill('SIGKILL');
  quiet(`ip netns del ${NS}`);
  quiet(`ip link del ${VETH}`);
}

// ---------------------------------------------------------------- daemon
const daemonLog = join(results, 'runtad.log');
const env = {
  ...process.env,
  RUNTA_TEST_PORT: process.env.RUNTA_TEST_PORT ?? '18184',
  RUNTA_TEST_SUBNET_OCTET: '153',
  RUNTA_TEST_DATA_PREFIX: 'runta-dash-e2e-',
  RUNTA_TEST_DAEMON_LOG: daemonLog,
};
if (!env.RUNTA_AGENT_BIN && existsSync(STATIC_AGENT)) env.RUNTA_AGENT_BIN = STATIC_AGENT;
// Waits until the daemon is healthy and its admin token works; prints KEY=value lines.
let started;
try {
  started = execFileSync('bash', [DAEMON_SCRIPT, 'start', '--egress-hosts', EGRESS_HOSTS], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
} catch {
  console.error(`[e2e] FAILED at step "start the daemon"; see ${daemonLog}`);
  process.exit(1);
}
const info = Object.fromEntries(
  started.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);
const BASE = info.RUNTA_TEST_ENDPOINT;
const dataDir = info.RUNTA_TEST_DATA_DIR;
const daemonPid = Number(info.RUNTA_TEST_DAEMON_PID);
const daemonAlive = () => {
  try {
    process.kill(daemonPid, 0);
    return true;
  } catch {
    return false;
  }
};

let tenantToken = null;
let browser = null;
let failed = false;

async function cleanup() {
  if (tenantToken && daemonAlive()) {
    try {
      const list = await http('GET', '/v1/runtimes?limit=100', tenantToken);
      for (const r of list.data) {
        log(`cleanup: deleting ${r.name}`);
        await http('DELETE', `/v1/runtimes/${r.id}`, tenantToken).catch((e) => log(`cleanup: ${e.message}`));
      }
    } catch (e) {
      log(`cleanup: ${e.message}`);
    }
  }
  if (browser) await browser.close().catch(() => {});
  testHostsDown();
  try {
    execFileSync('bash', [DAEMON_SCRIPT, 'stop', dataDir], { stdio: 'inherit' });
  } catch (e) {
    log(`stopping the daemon: ${e.message}`);
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await cleanup();
    process.exit(130);
  });
}

try {
  const admin = info.RUNTA_TEST_ADMIN_TOKEN;
  const tenant = `dash-e2e-${Date.now().toString(36)}`;
  tenantToken = (await http('POST', '/v1/tokens', admin, { tenant })).data.token;
  log(`daemon up, tenant ${tenant}`);

  step = 'static assets';
  {
    const index = await fetch(`${BASE}/`);
    check(index.ok && index.headers.get('content-type').startsWith('text/html'), '/ is HTML');
    const html = await index.text();
    const js = html.match(/src="(\/assets\/[^"]+\.js)"/)?.[1];
    check(js, 'index.html references a hashed script (is dashboard/dist embedded?)');
    const a = await fetch(BASE + js);
    check(a.headers.get('content-type').startsWith('text/javascript'), 'script content type');
    check(a.headers.get('cache-control').includes('immutable'), 'hashed assets are immutable');
    const h = await fetch(`${BASE}/healthz`);
    check((await h.json()).status === 'ok', '/healthz still answers JSON');
    const v1 = await fetch(`${BASE}/v1/runtimes`);
    check(v1.status === 401, '/v1 is not shadowed by the dashboard');
  }

  // Two neighbours, so the fleet view shows several statuses.
  step = 'create neighbours via API';
  const neighbours = Promise.all([
    http('POST', '/v1/runtimes', tenantToken, {
      name: 'worker-blue', resources: { requests: { vcpus: 1, memory_mib: 512 } },
    }).then(() => http('POST', '/v1/runtimes/worker-blue/pause', tenantToken)),
    http('POST', '/v1/runtimes', tenantToken, {
      name: 'batch-nightly', resources: { requests: { vcpus: 0.25, memory_mib: 128 } },
    }).then(() => http('POST', '/v1/runtimes/batch-nightly/stop', tenantToken)),
  ]);

  step = 'launch chromium';
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const consoleErrors = [];
  // The validation step provokes 422s on purpose; Chromium logs those as errors.
  let expected422 = 0;
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (expected422 > 0 && /status of (400|422)/.test(m.text())) {
      expected422--;
      return;
    }
    consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));

  step = 'sign in';
  await page.goto(`${BASE}/`);
  await page.getByLabel('Tenant token').fill(tenantToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Runtimes' }).waitFor();
  check(!page.url().includes(tenantToken), 'token is not in the URL');
  check((await page.evaluate(() => sessionStorage.getItem('runta.token'))) === tenantToken, 'token in sessionStorage');

  step = 'keyboard: skip link';
  await page.keyboard.press('Tab');
  check((await page.evaluate(() => document.activeElement?.textContent)) === 'Skip to content', 'first Tab reaches the skip link');

  step = 'validation message next to the field';
  await page.getByRole('link', { name: '+ New runtime' }).first().click();
  await page.getByLabel('Name', { exact: true }).fill('Bad_Name');
  expected422 = 1;
  await page.getByRole('button', { name: 'Create runtime' }).click();
  const nameErr = page.locator('[data-error-for="name"]');
  await nameErr.waitFor();
  check(/not a valid name/.test(await nameErr.textContent()), 'name error text');
  check((await page.locator('#f-name').getAttribute('aria-describedby')) === 'err-name', 'name error is tied to the field');
  check((await page.evaluate(() => document.activeElement?.id)) === 'f-name', 'focus moves to the bad field');
  // A second one, on a nested field path (resources.requests.vcpus).
  await page.getByLabel('Name', { exact: true }).fill('e2e-web');
  await page.getByLabel('vCPUs').fill('0');
  expected422 = 1;
  await page.getByRole('button', { name: 'Create runtime' }).click();
  await page.locator('[data-error-for="vcpus"]').waitFor();
  check((await page.locator('[data-error-for="name"]').count()) === 0, 'old name error cleared');
  await page.screenshot({ path: join(results, 'create.png'), fullPage: true });

  step = 'create from the form';
  await page.getByLabel('vCPUs').fill('0.5');
  await page.getByLabel('Memory (MiB)').fill('256');
  await page.getByRole('button', { name: '+ Add variable' }).click();
  await page.getByLabel('Name of variable 1').fill('GREETING');
  await page.getByLabel('Value of variable 1').fill('hi');
  await page.getByRole('button', { name: '+ Add port' }).click();
  await page.getByLabel('Port 1', { exact: true }).fill('8080');
  await page.getByLabel('Idle timeout (seconds)').fill('3600');
  await page.getByRole('button', { name: 'Create runtime' }).click();
  await page.waitForURL(/#\/runtimes\/e2e-web$/);
  step = 'see it running';
  await page.locator('h1 .badge-running').waitFor({ timeout: 90000 });
  log('runtime e2e-web is running');

  step = 'terminal: echo hello';
  await page.getByRole('button', { name: 'Open terminal' }).click();
  await page.locator('.term-open').waitFor();
  const rows = page.locator('.xterm-rows');
  await page.waitForFunction(() => /[$#]\s*$/m.test(document.querySelector('.xterm-rows')?.textContent ?? ''), null, { timeout: 15000 });
  await page.locator('.xterm').click();
  await page.keyboard.type('echo hello\n');
  await page.waitForFunction(
    () => [...document.querySelectorAll('.xterm-rows > div')].some((d) => d.textContent.trim() === 'hello'),
    null,
    { timeout: 15000 },
  );
  await page.keyboard.type('echo "$GREETING from $(hostname)"\n');
  await page.waitForFunction(
    () => [...document.querySelectorAll('.xterm-rows > div')].some((d) => d.textContent.trim() === 'hi from e2e-web'),
    null,
    { timeout: 15000 },
  );
  log(`terminal OK: ${(await rows.textContent()).replace(/\s+/g, ' ').slice(0, 120)}`);
  await page.keyboard.press('Control+BracketRight');
  check((await page.evaluate(() => document.activeElement?.textContent)) === 'Disconnect', 'Ctrl+] leaves the terminal');
  await page.keyboard.press('Enter');
  await page.getByRole('button', { name: 'Reconnect' }).waitFor();

  step = 'one-shot command';
  await page.getByRole('textbox', { name: 'Command', exact: true }).fill('echo from-exec; echo oops >&2; exit 3');
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  const res = page.getByTestId('exec-result');
  await res.locator('.exit-bad').waitFor();
  check((await res.textContent()).includes('from-exec') && (await res.textContent()).includes('exit 3'), 'exec output');

  step = 'egress: policy and audits';
  if (!canNetns) {
    log('egress step skipped: making a network namespace for the test hosts needs root');
  } else {
    testHostsUp();
    const eg = page.getByTestId('egress');
    const summary = eg.getByTestId('egress-summary');
    check((await summary.textContent()).startsWith('Open'), 'a new runtime is open');
    await eg.getByRole('radio', { name: 'Allowlist' }).check();
    // A URL is not a host: the daemon's 400 names the entry, next to the list.
    await eg.getByLabel('Allowed hosts').fill('https://allowed.test/simple');
    expected422 = 1;
    await eg.getByRole('button', { name: 'Save policy' }).click();
    const egErr = eg.locator('#eg-error');
    await egErr.waitFor();
    check((await egErr.textContent()).includes('https://allowed.test/simple'), `the error names the entry: ${await egErr.textContent()}`);
    check((await summary.textContent()).startsWith('Open'), 'a refused policy changes nothing');
    await eg.getByLabel('Allowed hosts').fill('allowed.test');
    await eg.getByRole('button', { name: 'Save policy' }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="egress-summary"]')?.textContent?.startsWith('Allowlist'));
    const onDaemon = (await http('GET', '/v1/runtimes/e2e-web', tenantToken)).data.egress_policy;
    check(onDaemon.mode === 'allowlist' && onDaemon.allowed_hosts.join() === 'allowed.test', `policy on the daemon: ${JSON.stringify(onDaemon)}`);
    // A program inside: the allowed host answers, the other one is refused by the gateway.
    const probe =
      `for i in $(seq 1 20); do curl -s -m 5 --resolve allowed.test:80:198.18.${NET}.2 http://allowed.test/ | grep -q hello && break; sleep 0.5; done; ` +
      `curl -s -m 5 --resolve allowed.test:80:198.18.${NET}.2 http://allowed.test/; ` +
      `curl -s -m 5 --resolve other.test:80:198.18.${NET}.3 -w ' status=%{http_code}' http://other.test/`;
    await page.getByRole('textbox', { name: 'Command', exact: true }).fill(probe);
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await page.waitForFunction(() => /status=\d+/.test(document.querySelector('[data-testid="exec-result"]')?.textContent ?? ''), null, { timeout: 30000 });
    const out = await page.getByTestId('exec-result').textContent();
    check(out.includes(`hello 198.18.${NET}.2`), `allowed host reached: ${out}`);
    check(out.includes('status=403') && !out.includes(`hello 198.18.${NET}.3`), `other host denied: ${out}`);
    // The audit table shows both decisions without a reload.
    await eg.locator('tr[data-action="deny"]', { hasText: 'other.test' }).first().waitFor({ timeout: 10000 });
    await eg.locator('tr[data-action="allow"]', { hasText: 'allowed.test' }).first().waitFor({ timeout: 10000 });
    await eg.scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(results, 'egress.png'), fullPage: true });
    // Back to open.
    await eg.getByRole('radio', { name: 'Open' }).check();
    await eg.getByRole('button', { name: 'Save policy' }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="egress-summary"]')?.textContent?.startsWith('Open'));
    const reopened = (await http('GET', '/v1/runtimes/e2e-web', tenantToken)).data.egress_policy;
    check(reopened.mode === 'denylist' && reopened.denied_hosts.length === 0 && reopened.allowed_hosts.length === 0, `open again: ${JSON.stringify(reopened)}`);
    log('egress OK');
  }

  step = 'secrets: create, never shown';
  // Every URL the page asks for, so no value can travel in one.
  const urls = [];
  page.on('request', (r) => urls.push(r.url()));
  const VALUE = `sv-e2e-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const VALUE2 = `sv-e2e-new-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const HOSTILE = '<img src=x onerror="window.__xss=1">';
  /** Asserts neither value is in the page (HTML, input values), its storage or any URL asked for. */
  const nowhere = async (what) => {
    const seen = await page.evaluate(() => {
      const st = (s) => Array.from({ length: s.length }, (_, i) => `${s.key(i)}=${s.getItem(s.key(i))}`).join('\n');
      const inputs = [...document.querySelectorAll('input, textarea')].map((e) => e.value).join('\n');
      return [document.documentElement.outerHTML, inputs, st(localStorage), st(sessionStorage), location.href, document.cookie].join('\n');
    });
    for (const v of [VALUE, VALUE2]) {
      check(!seen.includes(v), `${what}: a secret value is in the page or its storage`);
      check(!urls.some((u) => u.includes(v)), `${what}: a secret value was in a URL`);
    }
    check((await page.evaluate(() => window.__xss)) === undefined, `${what}: hostile HTML ran`);
  };
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Secrets' }).click();
  await page.getByRole('heading', { name: 'Secrets', exact: true }).waitFor();
  await page.getByTestId('secrets-empty').waitFor();
  // A hostile name: the daemon's 422 names the field, shown next to it as text.
  await page.getByLabel('Name', { exact: true }).fill(HOSTILE);
  await page.getByLabel('Value', { exact: true }).fill(VALUE);
  expected422 = 1;
  await page.getByRole('button', { name: 'Create secret' }).click();
  const secNameErr = page.locator('[data-error-for="name"]');
  await secNameErr.waitFor();
  check((await page.getByLabel('Value', { exact: true }).inputValue()) === '', 'the value field is cleared after a refused create');
  check((await page.locator('#sec-name').getAttribute('aria-invalid')) === 'true', 'the name field is marked invalid');
  check((await page.locator('img[src="x"]').count()) === 0, 'the hostile name is not HTML in the page');
  await nowhere('after a refused create');
  // A bad TTL is caught before anything is sent.
  await page.getByLabel('Name', { exact: true }).fill('e2e-key');
  await page.getByLabel('Value', { exact: true }).fill(VALUE);
  await page.getByLabel('Cache TTL (seconds)').fill('-4');
  await page.getByRole('button', { name: 'Create secret' }).click();
  await page.locator('[data-error-for="cache_ttl_secs"]').waitFor();
  check((await page.locator('[data-error-for="name"]').count()) === 0, 'the old name error is cleared');
  await page.getByLabel('Cache TTL (seconds)').fill('60');
  await page.getByRole('button', { name: 'Create secret' }).click();
  const secRow = page.locator('tr[data-secret="e2e-key"]');
  await secRow.waitFor();
  check((await page.getByLabel('Value', { exact: true }).inputValue()) === '', 'the value field is cleared after create');
  check((await secRow.textContent()).includes('60 s'), `the TTL is listed: ${await secRow.textContent()}`);
  const onDaemonSecret = (await http('GET', '/v1/secrets', tenantToken)).data.find((x) => x.name === 'e2e-key');
  check(onDaemonSecret && onDaemonSecret.cache_ttl_secs === 60, `secret on the daemon: ${JSON.stringify(onDaemonSecret)}`);
  check((await secRow.textContent()).includes(onDaemonSecret.id) && (await secRow.textContent()).includes(onDaemonSecret.stub), 'id and stub are listed');
  await nowhere('after create');
  await page.screenshot({ path: join(results, 'secrets.png'), fullPage: true });

  step = 'secrets: replace the value';
  await secRow.getByRole('button', { name: 'Replace value' }).click();
  const repl = page.getByRole('dialog', { name: 'Replace the value of e2e-key' });
  await repl.waitFor();
  check((await repl.getByLabel('New value').inputValue()) === '', 'the replace field starts empty');
  await repl.getByLabel('New value').fill(VALUE2);
  await repl.getByLabel('Cache TTL (seconds)').fill('0');
  await repl.getByRole('button', { name: 'Replace value' }).click();
  await repl.waitFor({ state: 'hidden' });
  await page.waitForFunction(() => document.querySelector('tr[data-secret="e2e-key"]')?.textContent?.includes('none (opened per request)'));
  const replaced = (await http('GET', `/v1/secrets/${onDaemonSecret.id}`, tenantToken)).data;
  check(replaced.cache_ttl_secs === 0 && replaced.updated_at !== onDaemonSecret.updated_at, `replaced on the daemon: ${JSON.stringify(replaced)}`);
  await nowhere('after replace');

  step = 'bindings: add, hostile text, delete';
  await page.goto(`${BASE}/#/runtimes/e2e-web`);
  await page.locator('h1 .badge-running').waitFor();
  const bind = page.getByTestId('bindings');
  await bind.getByTestId('bindings-empty').waitFor();
  await bind.getByLabel('Secret').selectOption('e2e-key');
  // A URL is not a host pattern: the daemon's 422 is shown, naming the field.
  await bind.getByLabel('Host').fill('https://api.example.com/v1');
  expected422 = 1;
  await bind.getByRole('button', { name: 'Add binding' }).click();
  const bindErr = bind.locator('[data-error-for="host"]');
  await bindErr.waitFor();
  check((await bindErr.textContent()).includes('host'), `the error names the host: ${await bindErr.textContent()}`);
  check((await bind.getByLabel('Host').getAttribute('aria-invalid')) === 'true', 'the host field is marked invalid');
  // A hostile host: refused, and whatever the error quotes is text.
  await bind.getByLabel('Host').fill(`<script>window.__xss=3</script>${HOSTILE}.example.com`);
  expected422 = 1;
  await bind.getByRole('button', { name: 'Add binding' }).click();
  await page.waitForFunction(() => !document.querySelector('[data-error-for="host"]')?.textContent?.includes('https://'));
  await bindErr.waitFor();
  check((await page.locator('img[src="x"]').count()) === 0 && (await bind.locator('script').count()) === 0, 'the hostile host made no element');
  await nowhere('after a hostile host');
  await bind.getByLabel('Host').fill('api.example.com');
  await bind.getByLabel('Path').fill('/v1/*');
  await bind.getByRole('button', { name: 'Add binding' }).click();
  await bind.locator('tr[data-binding]', { hasText: 'api.example.com' }).waitFor();
  // A template holding HTML is stored as given and shown as text.
  await bind.getByRole('radio', { name: 'a query parameter' }).check();
  await bind.getByLabel('Parameter name').fill('key');
  await bind.getByLabel('Host').fill('evil.example.com');
  await bind.getByLabel('Path').fill('/*');
  await bind.getByLabel('Template').fill(`${HOSTILE}\${credential}<script>window.__xss=2</script>`);
  await bind.getByRole('button', { name: 'Add binding' }).click();
  const evil = bind.locator('tr[data-binding]', { hasText: 'evil.example.com' });
  await evil.waitFor();
  check((await evil.textContent()).includes(HOSTILE), `the hostile template is shown as text: ${await evil.textContent()}`);
  check((await page.locator('img[src="x"]').count()) === 0 && (await bind.locator('script').count()) === 0, 'no element was made from it');
  const rules = (await http('GET', '/v1/runtimes/e2e-web/secret-injection-rules', tenantToken)).data;
  const hdr = rules.find((b) => b.host_pattern === 'api.example.com');
  check(hdr && hdr.path_pattern === '/v1/*' && hdr.injection.headerName === 'Authorization' && hdr.injection.valueFormat === 'Bearer ${credential}' && hdr.credential_display_name === 'e2e-key', `binding on the daemon: ${JSON.stringify(rules)}`);
  check(rules.some((b) => b.host_pattern === 'evil.example.com' && b.injection.paramName === 'key'), 'the param binding is on the daemon');
  await nowhere('bindings');
  await bind.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(results, 'bindings.png'), fullPage: true });
  // Delete, with a confirmation that can be cancelled.
  const hdrRow = bind.locator(`tr[data-binding="${hdr.id}"]`);
  await hdrRow.getByRole('button', { name: 'Delete' }).click();
  const bdlg = page.getByRole('dialog', { name: 'Delete this binding?' });
  await bdlg.getByRole('button', { name: 'Cancel' }).click();
  await bdlg.waitFor({ state: 'hidden' });
  check((await http('GET', '/v1/runtimes/e2e-web/secret-injection-rules', tenantToken)).data.length === 2, 'cancel keeps the binding');
  await hdrRow.getByRole('button', { name: 'Delete' }).click();
  await bdlg.getByRole('button', { name: 'Delete binding' }).click();
  await hdrRow.waitFor({ state: 'detached' });
  const leftRules = (await http('GET', '/v1/runtimes/e2e-web/secret-injection-rules', tenantToken)).data;
  check(leftRules.length === 1 && leftRules[0].host_pattern === 'evil.example.com', `one binding left: ${JSON.stringify(leftRules)}`);

  step = 'secrets: delete';
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Secrets' }).click();
  await secRow.waitFor();
  await secRow.getByRole('button', { name: 'Delete' }).click();
  const sdlg = page.getByRole('dialog', { name: 'Delete secret e2e-key?' });
  await sdlg.getByRole('button', { name: 'Cancel' }).click();
  await sdlg.waitFor({ state: 'hidden' });
  check((await http('GET', '/v1/secrets', tenantToken)).data.length === 1, 'cancel keeps the secret');
  await secRow.getByRole('button', { name: 'Delete' }).click();
  await sdlg.getByRole('button', { name: 'Delete secret' }).click();
  await page.getByTestId('secrets-empty').waitFor();
  check((await http('GET', '/v1/secrets', tenantToken)).data.length === 0, 'deleted on the daemon');
  check((await http('GET', '/v1/runtimes/e2e-web/secret-injection-rules', tenantToken)).data.length === 0, 'its bindings went with it');
  await nowhere('at the end');
  await page.goto(`${BASE}/#/runtimes/e2e-web`);
  log('secrets OK');

  step = 'pause';
  const actions = page.getByRole('group', { name: 'Lifecycle' });
  check(!(await actions.getByRole('button', { name: 'Boot' }).count()), 'no Boot while running');
  check(!(await actions.getByRole('button', { name: 'Resume' }).count()), 'no Resume while running');
  await actions.getByRole('button', { name: 'Pause' }).click();
  await page.locator('h1 .badge-paused').waitFor();
  check(!(await actions.getByRole('button', { name: 'Pause' }).count()), 'no Pause while paused');
  step = 'resume';
  await actions.getByRole('button', { name: 'Resume' }).click();
  await page.locator('h1 .badge-running').waitFor();

  step = 'resize memory';
  await page.getByLabel('Memory (MiB)').fill('384');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByText('Currently 384 MiB').waitFor();

  step = 'events timeline';
  await page.waitForFunction(() => {
    const t = document.querySelector('.timeline')?.textContent ?? '';
    return ['created', 'paused', 'resumed', 'resized'].every((w) => t.includes(w));
  });
  await page.waitForTimeout(4500); // a few usage samples for the chart
  await page.evaluate(() => scrollTo(0, 0));
  await page.screenshot({ path: join(results, 'runtime.png') });

  step = 'fleet view';
  await neighbours;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Runtimes' }).click();
  const row = page.locator('tr[data-runtime="e2e-web"]');
  await row.locator('.badge-running').waitFor();
  check((await row.locator('a[href^="https://"]').count()) === 1, 'published URL is a link');
  await page.locator('tr[data-runtime="worker-blue"] .badge-paused').waitFor();
  await page.locator('tr[data-runtime="batch-nightly"] .badge-shutdown').waitFor();
  await page.waitForTimeout(500);
  await page.screenshot({ path: join(results, 'fleet.png') });
  log('saved test-results/fleet.png');
  // Live: a change made elsewhere shows up without a reload.
  await http('POST', '/v1/runtimes/worker-blue/resume', tenantToken);
  await page.locator('tr[data-runtime="worker-blue"] .badge-running').waitFor({ timeout: 10000 });

  step = 'filters';
  await page.getByRole('button', { name: /^shutdown/ }).click();
  await page.locator('tr[data-runtime="e2e-web"]').waitFor({ state: 'detached' });
  check((await page.locator('tr[data-runtime]').count()) === 1, 'status filter leaves one row');
  await page.getByRole('button', { name: /^All/ }).click();
  await page.getByLabel('Filter by name').fill('worker');
  await page.locator('tr[data-runtime="e2e-web"]').waitFor({ state: 'detached' });
  check((await page.locator('tr[data-runtime]').count()) === 1, 'name filter leaves one row');
  await page.getByLabel('Filter by name').fill('');

  step = 'usage view';
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Usage' }).click();
  await page.getByRole('heading', { name: 'Usage', exact: true }).waitFor();
  await page.waitForFunction(() => document.querySelector('.stat-value')?.textContent === '3');
  await page.waitForTimeout(3500);
  await page.screenshot({ path: join(results, 'usage.png') });

  step = 'narrow window';
  await page.setViewportSize({ width: 390, height: 800 });
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Runtimes' }).click();
  await page.locator('tr[data-runtime="e2e-web"]').waitFor();
  await page.waitForTimeout(300);
  check(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth + 1), 'no horizontal scroll at 390 px');
  await page.screenshot({ path: join(results, 'fleet-narrow.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  step = 'delete with confirmation';
  await page.locator('tr[data-runtime="e2e-web"] a.rt-name').click();
  await page.locator('h1 .badge-running').waitFor();
  await actions.getByRole('button', { name: 'Delete' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'hidden' });
  await actions.getByRole('button', { name: 'Delete' }).click();
  await dialog.getByRole('button', { name: 'Delete runtime' }).click();
  await page.waitForURL(/#\/$/);
  await page.locator('tr[data-runtime="worker-blue"]').waitFor();
  check((await page.locator('tr[data-runtime="e2e-web"]').count()) === 0, 'deleted runtime is gone from the fleet');
  const left = await http('GET', '/v1/runtimes', tenantToken);
  check(!left.data.some((r) => r.name === 'e2e-web'), 'deleted on the daemon');

  step = 'sign out';
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Tenant token').waitFor();
  check((await page.evaluate(() => sessionStorage.getItem('runta.token'))) === null, 'token forgotten');

  step = 'console';
  check(consoleErrors.length === 0, `no console errors, got:\n  ${consoleErrors.join('\n  ')}`);
  log('PASS');
} catch (e) {
  failed = true;
  console.error(`[e2e] FAILED at step "${step}": ${e.stack ?? e}`);
  try {
    const pages = browser?.contexts()[0]?.pages() ?? [];
    if (pages[0]) await pages[0].screenshot({ path: join(results, 'failure.png') });
  } catch {}
} finally {
  await cleanup();
}
process.exit(failed ? 1 : 0);
