import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import t from 'tap';
import { DEFAULTS } from '../../src/config/defaults.js';
import { ConfigError, loadConfig, loadConfigWithWarnings, redactedConfig, resolveConfigPath, unreadableSecrets } from '../../src/config/load.js';
import { Secret, SiteKey } from '../../src/config/secret.js';
import type { Config } from '../../src/config/types.js';
import { berthServiceLinks } from '../harness/service-links.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const EXAMPLE = join(REPO, 'config/berth.toml');
const SECRET = 'hunter2-s3cr3t';
/** What `head -c 32 /dev/urandom | base64` writes: 44 characters and a newline. */
const SITE_KEY = 'q3J0c2l0ZWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=\n';
const GiB = 2 ** 30;

/** What the helpers need from a test: the root `t` and subtests both fit. */
type Test = Pick<typeof t, 'teardown' | 'fail'>;

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'berth-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function write(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  return path;
}

/** Writes berth.toml into a fresh temp dir and loads it with only the given environment. */
function loadText(t: Test, text: string, env: NodeJS.ProcessEnv = {}): { config: Config; dir: string; file: string } {
  const dir = tempDir(t);
  const file = write(dir, 'berth.toml', text);
  return { config: loadConfig({ file, env, cwd: dir }), dir, file };
}

/** The ConfigError `fn` throws; fails the test when it throws anything else. */
function configError(t: Test, fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    t.fail(`expected a ConfigError, got ${String(err)}`);
    throw err;
  }
  t.fail('expected a ConfigError, nothing was thrown');
  throw new Error('unreachable');
}

t.test('built-in defaults load with no file and no environment', async (t) => {
  const cwd = tempDir(t);
  const c = loadConfig({ env: {}, cwd });
  t.same(c, {
    source: null,
    server: { listen: '127.0.0.1:5050', host: '127.0.0.1', port: 5050, drainTimeoutMs: 30_000, sendfile: true },
    cache: { dir: join(cwd, 'var/berth'), maxSizeBytes: 20 * GiB, tagTtlMs: 300_000, serveStale: true, revalidateTimeoutMs: 3_000, prefetchIntervalMs: 3_600_000 },
    log: { level: 'info' },
    airgap: { trust: [] },
    upstreams: [
      {
        registry: 'docker.io',
        url: 'https://registry-1.docker.io',
        skipVerify: false,
        timeouts: { connectMs: 5_000, headersMs: 30_000, bodyIdleMs: 60_000 },
      },
    ],
    harbor: null,
    peers: null,
    prefetch: [],
  });
  t.equal(loadConfig({ file: null, env: {}, cwd }).cache.dir, join(cwd, 'var/berth'), 'file: null is the same');
  t.equal(loadConfig({ env: {} }).cache.dir, resolve('var/berth'), 'cwd defaults to process.cwd()');
});

t.test('the defaults object is frozen all the way down', async (t) => {
  t.ok(Object.isFrozen(DEFAULTS));
  t.ok(Object.isFrozen(DEFAULTS.cache));
  t.ok(Object.isFrozen(DEFAULTS.upstream[0]));
  t.ok(Object.isFrozen(DEFAULTS.harbor.projects));
  t.match(DEFAULTS.prefetchKeys.platforms[0], /^linux\/[a-z0-9]+$/);
});

t.test('$CACHE_DIRECTORY replaces the built-in cache dir only', async (t) => {
  const cwd = tempDir(t);
  t.equal(loadConfig({ env: { CACHE_DIRECTORY: '/var/cache/berth' }, cwd }).cache.dir, '/var/cache/berth');
  t.equal(loadConfig({ env: { CACHE_DIRECTORY: '/var/cache/berth:/var/cache/other' }, cwd }).cache.dir, '/var/cache/berth', 'first of several');
  t.equal(loadConfig({ env: { CACHE_DIRECTORY: '' }, cwd }).cache.dir, join(cwd, 'var/berth'), 'empty is unset');
  const { config, dir } = loadText(t, '[cache]\ndir = "blobs"\n', { CACHE_DIRECTORY: '/var/cache/berth' });
  t.equal(config.cache.dir, join(dir, 'blobs'), 'the file beats it, relative to cwd');
  const file = write(dir, 'b.toml', '[cache]\ndir = "/srv/file"\n');
  t.equal(loadConfig({ file, env: { BERTH_CACHE_DIR: '/srv/env', CACHE_DIRECTORY: '/x' }, cwd: dir }).cache.dir, '/srv/env', 'BERTH_CACHE_DIR beats both');
});

t.test('a full file sets every key', async (t) => {
  const dir = tempDir(t);
  write(dir, 'secrets/hub.password', `${SECRET}\n`);
  write(dir, 'secrets/harbor.password', `${SECRET}-harbor\r\n`);
  write(dir, 'tls/berth.crt', 'cert');
  write(dir, 'tls/berth.key', 'key');
  write(dir, 'ca.crt', 'ca');
  const file = write(
    dir,
    'etc/berth.toml',
    `
[server]
listen = "[::1]:5443"
tls_cert_file = "tls/berth.crt"
tls_key_file = "${join(dir, 'tls/berth.key')}"
drain_timeout = "1m30s"

[cache]
dir = "/var/cache/berth"
max_size = "1.5TiB"
tag_ttl = "0"
serve_stale = false
revalidate_timeout = "500ms"
prefetch_interval = "0"

[log]
level = "debug"

[[upstream]]
registry = "Docker.io"
url = "https://registry-1.docker.io/"
username = "edge"
password_file = "secrets/hub.password"
ca_file = "ca.crt"
skip_verify = true
via_harbor_project = "dockerhub-proxy"
connect_timeout = "2s"
header_timeout = "10s"
body_timeout = "2m"

[[upstream]]
registry = "harbor.example.com:8443"
url = "https://Harbor.Example.com:8443"

[harbor]
url = "https://harbor.example.com:8443/"
username = "robot$edge-sync"
password_file = "secrets/harbor.password"
ca_file = "ca.crt"
skip_verify = false
projects = ["edge", "dockerhub-proxy"]
sync_interval = "30s"
offline_grace = "2d"
on_expired = "allow"
prefetch_labels = ["edge-site"]
prefetch_preheat = false

[[prefetch]]
image = "nginx:1.27"
platforms = ["linux/amd64", "linux/arm64/v8"]

[[prefetch]]
image = "harbor.example.com:8443/edge/app@sha256:${'a'.repeat(64)}"
`,
  );
  const c = loadConfig({ file, env: {}, cwd: dir });
  t.same(c, {
    source: file,
    server: {
      listen: '[::1]:5443',
      host: '::1',
      port: 5443,
      drainTimeoutMs: 90_000,
      sendfile: true,
      tlsCertFile: join(dir, 'tls/berth.crt'),
      tlsKeyFile: join(dir, 'tls/berth.key'),
    },
    cache: { dir: '/var/cache/berth', maxSizeBytes: 1.5 * 2 ** 40, tagTtlMs: 0, serveStale: false, revalidateTimeoutMs: 500, prefetchIntervalMs: 0 },
    log: { level: 'debug' },
    airgap: { trust: [] },
    upstreams: [
      {
        registry: 'docker.io',
        url: 'https://registry-1.docker.io',
        username: 'edge',
        password: new Secret(file, 'upstream[0].password_file', join(dir, 'secrets/hub.password')),
        passwordFile: join(dir, 'secrets/hub.password'),
        caFile: join(dir, 'ca.crt'),
        skipVerify: true,
        viaHarborProject: 'dockerhub-proxy',
        timeouts: { connectMs: 2_000, headersMs: 10_000, bodyIdleMs: 120_000 },
      },
      {
        registry: 'harbor.example.com:8443',
        url: 'https://harbor.example.com:8443',
        skipVerify: false,
        timeouts: { connectMs: 5_000, headersMs: 30_000, bodyIdleMs: 60_000 },
      },
    ],
    harbor: {
      url: 'https://harbor.example.com:8443',
      username: 'robot$edge-sync',
      password: new Secret(file, 'harbor.password_file', join(dir, 'secrets/harbor.password')),
      passwordFile: join(dir, 'secrets/harbor.password'),
      caFile: join(dir, 'ca.crt'),
      skipVerify: false,
      projects: ['edge', 'dockerhub-proxy'],
      syncIntervalMs: 30_000,
      offlineGraceMs: 2 * 86_400_000,
      onExpired: 'allow',
      prefetchLabels: ['edge-site'],
      prefetchPreheat: false,
    },
    peers: null,
    prefetch: [
      { image: 'docker.io/library/nginx:1.27', platforms: ['linux/amd64', 'linux/arm64/v8'] },
      { image: `harbor.example.com:8443/edge/app@sha256:${'a'.repeat(64)}`, platforms: DEFAULTS.prefetchKeys.platforms },
    ],
  });
  t.equal(c.upstreams[0]?.password?.reveal(), SECRET);
  t.equal(c.harbor?.password?.reveal(), `${SECRET}-harbor`, 'a CRLF line end dropped too');
});

t.test('a relative --config path is taken from cwd and reported as given', async (t) => {
  const dir = tempDir(t);
  write(dir, 'berth.toml', '[cache]\nmax_size = "12XB"\n');
  const err = configError(t, () => loadConfig({ file: 'berth.toml', env: {}, cwd: dir }));
  t.equal(err.message, 'berth.toml: cache.max_size: "12XB" is not a size (use e.g. "512MiB", "20GiB")');
  t.equal(err.file, 'berth.toml');
  t.equal(err.key, 'cache.max_size');
  t.equal(err.code, 'ECONFIG');
  t.type(err, Error);
  write(dir, 'ok.toml', '');
  t.equal(loadConfig({ file: 'ok.toml', env: {}, cwd: dir }).source, join(dir, 'ok.toml'));
});

t.test('a missing or malformed file is named', async (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'nope.toml');
  t.match(configError(t, () => loadConfig({ file: missing, env: {} })), { file: missing, key: '', message: /cannot read the config file: ENOENT/ });
  t.match(configError(t, () => loadConfig({ file: dir, env: {} })), { file: dir, message: /EISDIR/ });
  const bad = write(dir, 'bad.toml', '[server\nlisten = "x"\n');
  t.match(configError(t, () => loadConfig({ file: bad, env: {} })), { file: bad, key: '', message: /invalid TOML at line 1, column \d+/ });
  // The parser's code frame would quote this line; the message must not.
  const leaky = write(dir, 'leaky.toml', `[harbor]\nurl = "https://h"\npassword = "${SECRET}\n`);
  const err = configError(t, () => loadConfig({ file: leaky, env: {} }));
  t.match(err.message, /invalid TOML at line 3/);
  t.notMatch(err.message, SECRET);
});

t.test('environment overrides, coerced to each key\'s type', async (t) => {
  const dir = tempDir(t);
  write(dir, 'harbor.password', `${SECRET}\n`);
  const { config } = loadText(t, '[server]\nlisten = "127.0.0.1:6000"\n[cache]\nserve_stale = true\n', {
    BERTH_CONFIG: '/ignored/here.toml',
    BERTH_SERVER_LISTEN: '0.0.0.0:5050',
    BERTH_SERVER_DRAIN_TIMEOUT: '5s',
    BERTH_CACHE_MAX_SIZE: '50GiB',
    BERTH_CACHE_SERVE_STALE: 'false',
    BERTH_CACHE_TAG_TTL: '1m',
    BERTH_CACHE_REVALIDATE_TIMEOUT: '10s',
    BERTH_LOG_LEVEL: 'warn',
    BERTH_HARBOR_URL: 'https://harbor.example.com',
    BERTH_HARBOR_USERNAME: 'robot$edge',
    BERTH_HARBOR_PASSWORD_FILE: join(dir, 'harbor.password'),
    BERTH_HARBOR_PROJECTS: ' edge, dockerhub-proxy,, ',
    BERTH_HARBOR_SKIP_VERIFY: '1',
    BERTH_HARBOR_ON_EXPIRED: 'allow',
    OTHER_VARIABLE: 'ignored',
  });
  t.equal(config.server.listen, '0.0.0.0:5050', 'env beats the file');
  t.equal(config.server.drainTimeoutMs, 5_000);
  t.equal(config.cache.maxSizeBytes, 50 * GiB);
  t.equal(config.cache.serveStale, false);
  t.equal(config.cache.tagTtlMs, 60_000);
  t.equal(config.cache.revalidateTimeoutMs, 10_000);
  t.equal(config.log.level, 'warn');
  t.match(config.harbor, {
    url: 'https://harbor.example.com',
    username: 'robot$edge',
    password: { file: 'environment BERTH_HARBOR_PASSWORD_FILE', key: 'harbor.password_file', path: join(dir, 'harbor.password') },
    projects: ['edge', 'dockerhub-proxy'],
    skipVerify: true,
    onExpired: 'allow',
    syncIntervalMs: 300_000,
    offlineGraceMs: 72 * 3_600_000,
  });
  t.equal(config.harbor?.password?.reveal(), SECRET);

  const bools: [string, boolean][] = [['true', true], ['TRUE', true], ['1', true], ['false', false], ['False', false], ['0', false]];
  for (const [text, value] of bools) {
    t.equal(loadConfig({ env: { BERTH_CACHE_SERVE_STALE: text }, cwd: dir }).cache.serveStale, value, `bool ${text}`);
  }
  t.same(loadConfig({ env: { BERTH_HARBOR_URL: 'https://h', BERTH_HARBOR_PROJECTS: '' }, cwd: dir }).harbor?.projects, [], 'empty list');
  t.equal(loadConfig({ env: { BERTH_HARBOR_URL: 'https://h' }, cwd: dir }).harbor?.onExpired, 'deny', 'harbor defaults apply to an env-only section');
});

t.test('bad environment variables name themselves', async (t) => {
  const cases: [NodeJS.ProcessEnv, string, RegExp][] = [
    [{ BERTH_CACHE_MAX_SIZE: '12XB' }, 'cache.max_size', /"12XB" is not a size/],
    [{ BERTH_CACHE_SERVE_STALE: 'yes' }, 'cache.serve_stale', /expected true, false, 1 or 0, got "yes"/],
    [{ BERTH_CACHE_REVALIDATE_TIMEOUT: '3' }, 'cache.revalidate_timeout', /"3" has no unit/],
    [{ BERTH_UPSTREAM_URL: 'https://x' }, 'upstream.url', /config file only/],
    [{ BERTH_PREFETCH_IMAGE: 'nginx' }, 'prefetch.image', /config file only/],
    [{ BERTH_SERVER_LISTEN: '5050' }, 'server.listen', /not host:port/],
    [{ BERTH_HARBOR_USERNAME: 'robot' }, 'harbor.url', /missing/],
  ];
  for (const [env, key, message] of cases) {
    const name = Object.keys(env)[0]!;
    t.match(configError(t, () => loadConfig({ env })), { key, file: `environment ${name}`, message }, name);
  }
  const err = configError(t, () => loadConfig({ env: { BERTH_HARBOR_URL: 'https://h', BERTH_HARBOR_PASSWORD: SECRET } }));
  t.match(err, { key: 'harbor.password', file: 'environment BERTH_HARBOR_PASSWORD', message: /harbor\.password_file/ });
  t.notMatch(err.message, SECRET);
});

t.test('a BERTH_* name that is no key is a warning and ignored (Kubernetes service links)', async (t) => {
  const cwd = tempDir(t);
  const links = berthServiceLinks();
  t.ok(links.BERTH_PORT === 'tcp://10.152.183.7:5050' && links.BERTH_SERVER_PORT === 'tcp://10.152.183.9:5050' && links.BERTH_PEERS_PORT_5051_TCP_ADDR === '10.152.183.8');
  const { config, warnings } = loadConfigWithWarnings({ env: links, cwd });
  t.same(config, loadConfig({ env: {}, cwd }), 'the config is what it is without them');
  t.equal(config.harbor, null, 'BERTH_HARBOR_* service links do not switch Harbor on');
  t.equal(config.peers, null, 'BERTH_PEERS_* service links (a Service named berth-peers) do not switch peers on');
  t.same(warnings.map((w) => w.file).sort(), Object.keys(links).map((n) => `environment ${n}`).sort(), 'one warning per variable');
  for (const w of warnings) {
    t.match(w.message, /ignored/, w.message);
    t.ok(w.message.startsWith(`${w.file}: ${w.key}: `), 'names the variable and the key it would be');
    t.match(w.message, /enableServiceLinks: false/, 'says where they come from and how to stop them');
    t.notMatch(w.message, /10\.152\.183/, 'the value is not echoed');
  }
  t.match(warnings.find((w) => w.file === 'environment BERTH_SERVER_PORT'), { key: 'server.port', message: /unknown key \(known: listen, / });
  t.match(warnings.find((w) => w.file === 'environment BERTH_PORT'), { key: 'port', message: /no such section/ });
  t.match(warnings.find((w) => w.file === 'environment BERTH_PEERS_PORT'), { key: 'peers.port', message: /unknown key \(known: listen, key_file, / });
  t.match(warnings.find((w) => w.file === 'environment BERTH_PEERS_SERVICE_PORT_PEERS'), { key: 'peers.service_port_peers', message: /service links of a Service named "berth-peers"/ });
  t.match(warnings.find((w) => w.file === 'environment BERTH_UPSTREAM_PORT'), { key: 'upstream.port' });

  const other: [NodeJS.ProcessEnv, string, RegExp][] = [
    [{ BERTH_FOO_BAR: '1' }, 'foo.bar', /no such section/],
    [{ BERTH_CACHE: '1' }, 'cache', /no key/],
    [{ BERTH_CACHE_SIZE: '1GiB' }, 'cache.size', /unknown key \(known: dir, max_size, tag_ttl, serve_stale, revalidate_timeout, prefetch_interval\)/],
  ];
  for (const [env, key, message] of other) {
    const name = Object.keys(env)[0]!;
    const loaded = loadConfigWithWarnings({ env, cwd });
    t.same(loaded.config, loadConfig({ env: {}, cwd }), `${name}: ignored`);
    t.match(loaded.warnings, [{ key, file: `environment ${name}`, message }], name);
    t.notMatch(loaded.warnings[0]?.message, /enableServiceLinks/, `${name}: no Kubernetes hint for a name Kubernetes does not write`);
  }
  t.same(loadConfigWithWarnings({ env: { BERTH_CACHE_MAX_SIZE: '1GiB' }, cwd }).warnings, [], 'a real key: no warning');

  // Next to all of them, a bad value for a real key still fails, naming the key.
  const err = configError(t, () => loadConfig({ env: { ...links, BERTH_CACHE_MAX_SIZE: 'banana' }, cwd }));
  t.match(err, { key: 'cache.max_size', file: 'environment BERTH_CACHE_MAX_SIZE', message: /"banana" is not a size/ });
});

t.test('every kind of bad value or unknown key names the key and the file', async (t) => {
  const up = (body: string) => `[[upstream]]\nregistry = "docker.io"\nurl = "https://registry-1.docker.io"\n${body}\n`;
  const harbor = (body: string) => `[harbor]\nurl = "https://harbor.example.com"\n${body}\n`;
  const cases: [string, string, RegExp][] = [
    ['foo = 1', 'foo', /unknown key at the top level \(known sections: server, cache, log, harbor, peers, airgap, upstream, prefetch\)/],
    ['[servr]', 'servr', /unknown key at the top level/],
    ['server = 5', 'server', /expected a \[server\] table/],
    ['[upstream]\nregistry = "docker.io"', 'upstream', /write \[\[upstream\]\], not \[upstream\]/],
    ['upstream = [1]', 'upstream[0]', /expected a table/],
    ['upstream = []', 'upstream', /at least one \[\[upstream\]\]/],
    ['[server]\nlisen = "x"', 'server.lisen', /unknown key \(known: listen, tls_cert_file, tls_key_file, drain_timeout, metrics_listen, sendfile\)/],
    ['[server.tls]\ncert = "x"', 'server.tls', /unknown key/],
    ['[server]\nlisten = 5050', 'server.listen', /expected a string, got integer 5050/],
    ['[server]\nlisten = "5050"', 'server.listen', /not host:port/],
    ['[server]\nlisten = "localhost"', 'server.listen', /not host:port/],
    ['[server]\nlisten = ":5050"', 'server.listen', /has no host/],
    ['[server]\nlisten = "127.0.0.1:0"', 'server.listen', /port must be a number from 1 to 65535/],
    ['[server]\nlisten = "127.0.0.1:65536"', 'server.listen', /port must be/],
    ['[server]\nlisten = "127.0.0.1:http"', 'server.listen', /port must be/],
    ['[server]\nlisten = "::1:5050"', 'server.listen', /IPv6 address needs brackets/],
    ['[server]\nlisten = "[::1]"', 'server.listen', /not host:port/],
    ['[server]\nlisten = "[example.com]:5050"', 'server.listen', /is not an IPv6 address/],
    ['[server]\nlisten = "bad_host!:5050"', 'server.listen', /not an IPv4 address or host name/],
    ['[server]\nlisten = ""', 'server.listen', /must not be empty/],
    ['[server]\ndrain_timeout = "soon"', 'server.drain_timeout', /"soon" is not a duration/],
    ['[server]\ndrain_timeout = "30d"', 'server.drain_timeout', /too long \(at most 24d20h31m23s647ms/],
    ['[server]\ntls_cert_file = "c.crt"', 'server.tls_key_file', /go together/],
    ['[server]\ntls_key_file = "c.key"', 'server.tls_cert_file', /go together/],
    ['[server]\ntls_cert_file = "c.crt"\ntls_key_file = "c.key"', 'server.tls_cert_file', /cannot read ".*c\.crt": ENOENT/],
    ['[cache]\nmax_size = 20', 'cache.max_size', /expected a string, got integer 20/],
    ['[cache]\nmax_size = "0"', 'cache.max_size', /too small/],
    ['[cache]\nmax_size = "-1GiB"', 'cache.max_size', /negative/],
    ['[cache]\ntag_ttl = "-1s"', 'cache.tag_ttl', /negative/],
    ['[cache]\ntag_ttl = 1979-05-27', 'cache.tag_ttl', /expected a string, got a date/],
    ['[cache]\nserve_stale = "yes"', 'cache.serve_stale', /expected true or false, got string "yes"/],
    ['[cache]\nrevalidate_timeout = "soon"', 'cache.revalidate_timeout', /"soon" is not a duration/],
    ['[cache]\nrevalidate_timeout = "0"', 'cache.revalidate_timeout', /must be more than 0/],
    ['[cache]\nrevalidate_timeout = "30d"', 'cache.revalidate_timeout', /too long/],
    ['[cache]\ndir = ""', 'cache.dir', /must not be empty/],
    ['[cache]\ndir = ["a"]', 'cache.dir', /expected a string, got an array/],
    ['[log]\nlevel = "verbose"', 'log.level', /not a log level \(one of fatal, error, warn, info, debug, trace, silent\)/],
    ['[[upstream]]\nurl = "https://r"', 'upstream[0].registry', /missing \(e\.g\. registry = "docker\.io"\)/],
    ['[[upstream]]\nregistry = "r.io"', 'upstream[0].url', /missing/],
    ['[[upstream]]\nregistry = "https://r.io"\nurl = "https://r.io"', 'upstream[0].registry', /write the host alone/],
    ['[[upstream]]\nregistry = "not a host"\nurl = "https://r.io"', 'upstream[0].registry', /is not a registry host/],
    [up('') + up(''), 'upstream[1].registry', /"docker\.io" is already configured by upstream\[0\]/],
    [up('') + '[[upstream]]\nregistry = "Docker.IO"\nurl = "https://x"', 'upstream[1].registry', /already configured/],
    ['[[upstream]]\nregistry = "r.io"\nurl = "ftp://r.io"', 'upstream[0].url', /must start with http:\/\/ or https:\/\//],
    ['[[upstream]]\nregistry = "r.io"\nurl = "https://r.io/?a=1"', 'upstream[0].url', /must not have a query/],
    ['[[upstream]]\nregistry = "r.io"\nurl = "https://r.io/#top"', 'upstream[0].url', /or fragment/],
    ['[[upstream]]\nregistry = "r.io"\nurl = "r.io"', 'upstream[0].url', /is not a URL/],
    [up('skip_verify = "false"'), 'upstream[0].skip_verify', /expected true or false/],
    [up('connect_timeout = "0s"'), 'upstream[0].connect_timeout', /must be more than 0/],
    [up('header_timeout = "x"'), 'upstream[0].header_timeout', /is not a duration/],
    [up('body_timeout = 60'), 'upstream[0].body_timeout', /expected a string, got integer 60/],
    [up('username = "u"'), 'upstream[0].password_file', /needs a password_file/],
    [up('password_file = "p"'), 'upstream[0].username', /needs a username/],
    [up('ca_file = "nope.crt"'), 'upstream[0].ca_file', /cannot read ".*nope\.crt": ENOENT/],
    [up('via_harbor_project = "dockerhub"'), 'upstream[0].via_harbor_project', /needs a \[harbor\] section/],
    [harbor('') + up('via_harbor_project = "Docker Hub"'), 'upstream[0].via_harbor_project', /not a Harbor project name/],
    [up('timeout = "5s"'), 'upstream[0].timeout', /unknown key \(known: registry, url, username, password_file/],
    ['[harbor]\nprojects = []', 'harbor.url', /missing/],
    [harbor('url2 = 1'), 'harbor.url2', /unknown key/],
    ['[harbor]\nurl = "https://h/?x"', 'harbor.url', /must not have a query/],
    ['[harbor]\nurl = "harbor.example.com"', 'harbor.url', /is not a URL/],
    [harbor('on_expired = "maybe"'), 'harbor.on_expired', /"maybe" is neither "deny" nor "allow"/],
    [harbor('projects = "edge"'), 'harbor.projects', /expected an array of strings, got string "edge"/],
    [harbor('projects = [1]'), 'harbor.projects', /item 0: expected a non-empty string, got integer 1/],
    [harbor('projects = ["edge", "edge"]'), 'harbor.projects', /"edge" is listed twice/],
    [harbor('projects = ["Edge"]'), 'harbor.projects', /"Edge" is not a Harbor project name/],
    [harbor('sync_interval = "0"'), 'harbor.sync_interval', /must be more than 0/],
    [harbor('sync_interval = "25d"'), 'harbor.sync_interval', /too long/],
    [harbor('offline_grace = "0s"'), 'harbor.offline_grace', /must be more than 0/],
    [harbor('skip_verify = 1'), 'harbor.skip_verify', /expected true or false, got integer 1/],
    [harbor('username = "robot"'), 'harbor.password_file', /needs a password_file/],
    ['[[prefetch]]\nplatforms = ["linux/amd64"]', 'prefetch[0].image', /missing/],
    ['[[prefetch]]\nimage = "nginx:!bad"', 'prefetch[0].image', /invalid tag in image reference/],
    ['[[prefetch]]\nimage = "Nginx"', 'prefetch[0].image', /invalid repository name/],
    ['[[prefetch]]\nimage = "quay.io/app/x:1"', 'prefetch[0].image', /no \[\[upstream\]\] has registry "quay\.io"/],
    ['[[prefetch]]\nimage = "nginx"\nplatforms = []', 'prefetch[0].platforms', /is empty/],
    ['[[prefetch]]\nimage = "nginx"\nplatforms = ["amd64"]', 'prefetch[0].platforms', /"amd64" is not a platform/],
    ['[[prefetch]]\nimage = "nginx"\nplatforms = ["linux/amd64", "linux/amd64"]', 'prefetch[0].platforms', /listed twice/],
    ['[[prefetch]]\nimage = "nginx"\nplatform = "linux/amd64"', 'prefetch[0].platform', /unknown key \(known: image, platforms\)/],
  ];
  for (const [text, key, message] of cases) {
    const dir = tempDir(t);
    const file = write(dir, 'berth.toml', text);
    const err = configError(t, () => loadConfig({ file, env: {}, cwd: dir }));
    t.match(err, { key, file, message }, `${key}: ${text.split('\n').pop()}`);
    t.ok(err.message.startsWith(`${file}: ${key}: `), 'message starts with file and key');
  }
});

t.test('an unknown key is reported before the complaints it would cause', async (t) => {
  const dir = tempDir(t);
  const file = write(dir, 'berth.toml', '[harbor]\nurl = "https://h"\nusername = "robot"\npasword_file = "p"\n');
  t.match(configError(t, () => loadConfig({ file, env: {} })), { key: 'harbor.pasword_file', message: /unknown key/ });
});

t.test('secrets come from files and never appear in an error', async (t) => {
  const dir = tempDir(t);
  const messages: string[] = [];
  const expectError = (text: string, key: string) => {
    const file = write(dir, 'berth.toml', text);
    const err = configError(t, () => loadConfig({ file, env: {}, cwd: dir }));
    t.equal(err.key, key);
    messages.push(err.message);
  };
  expectError(`[harbor]\nurl = "https://h"\npassword = "${SECRET}"\n`, 'harbor.password');
  t.match(messages.at(-1), /a secret is not accepted here; write it to a file \(mode 0600\) and set harbor\.password_file/);
  expectError(`[[upstream]]\nregistry = "r.io"\nurl = "https://r.io"\npassword = "${SECRET}"\n`, 'upstream[0].password');
  expectError(`[[upstream]]\nregistry = "r.io"\nurl = "https://user:${SECRET}@r.io"\n`, 'upstream[0].url');
  t.match(messages.at(-1), /must not carry credentials/);
  expectError(`[harbor]\nurl = "ftp://user:${SECRET}@h"\n`, 'harbor.url');
  // A secret file next to a later error: the error still carries only paths.
  write(dir, 'p', `${SECRET}\n`);
  expectError(`[harbor]\nurl = "https://h"\nusername = "r"\npassword_file = "p"\non_expired = "never"\n`, 'harbor.on_expired');
  for (const message of messages) t.notMatch(message, SECRET, message);

  const file = write(dir, 'ok.toml', `[harbor]\nurl = "https://h"\nusername = "r"\npassword_file = "p"\n`);
  const c = loadConfig({ file, env: {}, cwd: dir });
  t.equal(c.harbor?.password?.reveal(), SECRET, 'one trailing newline dropped');
  const printed = JSON.stringify(redactedConfig(c));
  t.notMatch(printed, SECRET);
  t.match(redactedConfig(c), { harbor: { password: '<redacted>', passwordFile: join(dir, 'p'), username: 'r' } });
  t.equal(c.harbor?.password?.reveal(), SECRET, 'redacting copies, the config keeps its secret');
  t.notOk(Object.isFrozen(redactedConfig(c)), 'the redacted copy is a plain object');
  // Read once, the secret is in memory: the whole config, however it is printed, still does not show it.
  for (const [how, text] of [['JSON', JSON.stringify(c)], ['String', String(c.harbor?.password)], ['inspect', inspect(c, { depth: 10, showHidden: true })], ['template', `${c.harbor?.password}`]]) {
    t.notMatch(text, SECRET, `${how}: no secret`);
    t.match(text, /<redacted>/, `${how}: says what is there`);
  }
  write(dir, 'two', 'line1\n\n');
  const two = write(dir, 'two.toml', `[harbor]\nurl = "https://h"\nusername = "r"\npassword_file = "two"\n`);
  t.equal(loadConfig({ file: two, env: {}, cwd: dir }).harbor?.password?.reveal(), 'line1\n', 'only one newline dropped');
});

// Loading once read every password_file, so commands that never send one (status, gc, configure) failed
// for anyone who could not read the daemon's secrets.
t.test('secrets are read where they are used, not when the config loads', async (t) => {
  const dir = tempDir(t);
  const up = (name: string) => `[[upstream]]\nregistry = "r${name}.io"\nurl = "https://r${name}.io"\nusername = "u"\npassword_file = "${name}"\n`;
  write(dir, 'later', `${SECRET}\n`);
  write(dir, 'empty', '\n');
  const file = write(dir, 'berth.toml', `${up('missing')}${up('later')}${up('empty')}[harbor]\nurl = "https://h"\nusername = "r"\npassword_file = "missing"\n`);
  const c = loadConfig({ file, env: {}, cwd: dir });
  t.pass('a config naming a missing, a later-changed and an empty password_file loads');

  write(dir, 'later', 'changed\n');
  t.equal(c.upstreams[1]?.password?.reveal(), 'changed', 'read on first use: what the file holds then');
  write(dir, 'later', 'changed again\n');
  t.equal(c.upstreams[1]?.password?.reveal(), 'changed', 'and kept from then on');

  const missing = configError(t, () => c.upstreams[0]?.password?.reveal());
  t.match(missing, { file, key: 'upstream[0].password_file', message: /cannot read ".*missing": ENOENT/ }, 'unreadable: names the key and the file');
  t.match(configError(t, () => c.upstreams[2]?.password?.reveal()), { file, key: 'upstream[2].password_file', message: /".*empty" is empty/ });

  // What serve checks before it starts: every problem, each naming its key.
  t.same(unreadableSecrets(c).map((e) => e.key), ['upstream[0].password_file', 'upstream[2].password_file', 'harbor.password_file']);
  write(dir, 'missing', 'm\n');
  write(dir, 'empty', 'e\n');
  t.same(unreadableSecrets(c), [], 'none once they can be read');
  t.equal(c.harbor?.password?.reveal(), 'm');
});

t.test('values are normalised', async (t) => {
  const { config } = loadText(
    t,
    '[server]\nlisten = "localhost:5050"\n[[upstream]]\nregistry = "GHCR.io"\nurl = "HTTPS://GHCR.IO:443/v2path//"\n[[prefetch]]\nimage = "ghcr.io/org/app"\n',
  );
  t.match(config.server, { listen: 'localhost:5050', host: 'localhost', port: 5050 });
  t.match(config.upstreams[0], { registry: 'ghcr.io', url: 'https://ghcr.io/v2path' });
  t.same(config.prefetch[0]?.image, 'ghcr.io/org/app:latest');
});

t.test('the result is frozen', async (t) => {
  const c = loadConfig({ env: {}, cwd: tempDir(t) });
  t.ok(Object.isFrozen(c));
  t.throws(() => {
    (c.cache as { maxSizeBytes: number }).maxSizeBytes = 1;
  }, TypeError);
  t.throws(() => {
    c.upstreams.push(c.upstreams[0]!);
  }, TypeError);
  t.throws(() => {
    (c.upstreams[0]!.timeouts as { connectMs: number }).connectMs = 1;
  }, TypeError);
  t.throws(() => {
    (c as { harbor: unknown }).harbor = {};
  }, TypeError);
  t.equal(c.cache.maxSizeBytes, 20 * GiB);
});

t.test('resolveConfigPath: --config, then $BERTH_CONFIG, then the system file, then none', async (t) => {
  const dir = tempDir(t);
  const system = write(dir, 'berth.toml', '');
  const absent = join(dir, 'absent.toml');
  t.equal(resolveConfigPath('flag.toml', { BERTH_CONFIG: 'env.toml' }, system), 'flag.toml');
  t.equal(resolveConfigPath(undefined, { BERTH_CONFIG: 'env.toml' }, system), 'env.toml');
  t.equal(resolveConfigPath('', { BERTH_CONFIG: 'env.toml' }, system), 'env.toml', 'an empty flag is unset');
  t.equal(resolveConfigPath(undefined, { BERTH_CONFIG: '' }, system), system, 'an empty variable is unset');
  t.equal(resolveConfigPath(undefined, {}, system), system);
  t.equal(resolveConfigPath(undefined, {}, absent), null);
  t.equal(DEFAULTS.configFile, '/etc/berth/berth.toml');
});

t.test('the example config/berth.toml loads as it is', async (t) => {
  const c = loadConfig({ file: EXAMPLE, env: {}, cwd: tempDir(t) });
  t.equal(c.source, EXAMPLE);
  t.equal(c.harbor, null, 'Harbor stays off until an operator fills it in');
  t.equal(c.peers, null, 'and so do peers');
  t.match(c.upstreams, [{ registry: 'docker.io', timeouts: { connectMs: 5_000 } }]);
});

t.test('the example with every optional key uncommented loads too', async (t) => {
  const dir = tempDir(t);
  const text = readFileSync(EXAMPLE, 'utf8')
    .split('\n')
    .map((line) => line.replace(/^# ((?:\[\[?[a-z]+\]\]?)|(?:[a-z_]+ = .+))$/, '$1'))
    .join('\n')
    .replaceAll('/etc/berth/', `${dir}/`);
  for (const m of text.matchAll(/_file = "([^"]+)"/g)) write(dir, m[1]!.slice(dir.length + 1), `${SECRET}\n`);
  // The site key has a minimum length (32 bytes) no password has.
  write(dir, 'site.key', SITE_KEY);
  // [airgap] trust names public key files, read by `berth import`.
  write(dir, 'keys/exporter.pub', 'public key\n');
  const file = write(dir, 'berth.toml', text);
  const c = loadConfig({ file, env: {}, cwd: dir });
  t.equal(c.cache.dir, '/var/cache/berth');
  t.ok(c.server.tlsCertFile && c.server.tlsKeyFile);
  t.equal(c.upstreams.length, 2);
  t.match(c.upstreams[0], { username: 'edge-sites', viaHarborProject: 'dockerhub-proxy' });
  t.match(c.harbor, { url: 'https://harbor.example.com', username: 'robot$edge-sync', projects: [] });
  t.same(unreadableSecrets(c), [], 'its secrets can be read');
  t.equal(c.upstreams[0]?.password?.reveal(), SECRET);
  t.equal(c.harbor?.password?.reveal(), SECRET);
  t.same(c.prefetch, [{ image: 'docker.io/library/nginx:1.27', platforms: ['linux/amd64', 'linux/arm64/v8'] }]);
  t.match(c.peers, {
    listen: '10.0.0.11:5051',
    keyFile: join(dir, 'site.key'),
    membership: { kind: 'static', members: ['10.0.0.11:5051', '10.0.0.12:5051', '10.0.0.13:5051'] },
    tls: { certFile: join(dir, 'tls/peer.crt'), keyFile: join(dir, 'tls/peer.key') },
    caFile: join(dir, 'site-ca.crt'),
  });
  t.equal(c.peers?.key.reveal().toString(), SITE_KEY.trim());
  t.same(c.airgap.trust, [join(dir, 'keys/exporter.pub')]);
});

/** A [peers] section with its key file (and any other file it names) in a fresh dir. */
function peersDir(t: Test): string {
  const dir = tempDir(t);
  write(dir, 'site.key', SITE_KEY);
  write(dir, 'tls/peer.crt', 'cert');
  write(dir, 'tls/peer.key', 'key');
  write(dir, 'site-ca.crt', 'ca');
  return dir;
}

const PEERS = '[peers]\nlisten = "10.0.0.11:5051"\nkey_file = "site.key"\n';

t.test('[peers] with each membership source', async (t) => {
  const dir = peersDir(t);
  const load = (text: string) => loadConfig({ file: write(dir, 'berth.toml', text), env: {}, cwd: dir });
  const file = join(dir, 'berth.toml');
  const key = new SiteKey(file, 'peers.key_file', join(dir, 'site.key'));

  const full = load(`
[server]
listen = "127.0.0.1:5050"

[peers]
listen = "[FD00:0:0::11]:5051"
key_file = "site.key"
members = ["[fd00::11]:5051", "10.0.0.12:5051", "Node-3.Site.Example.:5051"]
tls_cert_file = "tls/peer.crt"
tls_key_file = "tls/peer.key"
ca_file = "site-ca.crt"
resolve_interval = "1m"
connect_timeout = "500ms"
header_timeout = "5s"
body_timeout = "20s"
clock_window = "10s"
`);
  t.same(full.peers, {
    listen: '[fd00::11]:5051',
    host: 'fd00::11',
    port: 5051,
    key,
    keyFile: join(dir, 'site.key'),
    membership: { kind: 'static', members: ['[fd00::11]:5051', '10.0.0.12:5051', 'node-3.site.example:5051'] },
    tls: { certFile: join(dir, 'tls/peer.crt'), keyFile: join(dir, 'tls/peer.key') },
    caFile: join(dir, 'site-ca.crt'),
    resolveIntervalMs: 60_000,
    timeouts: { connectMs: 500, headersMs: 5_000, bodyIdleMs: 20_000 },
    clockWindowMs: 10_000,
  }, 'static: every key, addresses in their normal form');
  t.ok(full.peers?.key.reveal().equals(Buffer.from(SITE_KEY.trim())), 'the key is the file without its newline');
  t.ok(Object.isFrozen(full.peers?.membership), 'frozen like the rest');

  t.same(load(`${PEERS}dns = "Berth-Peers.berth.svc.cluster.local:5051"\n`).peers?.membership, { kind: 'dns', name: 'berth-peers.berth.svc.cluster.local', port: 5051 }, 'dns');
  t.same(
    load(`${PEERS}kubernetes = { namespace = "berth", service = "berth-peers", port = "peer" }\n`).peers?.membership,
    { kind: 'kubernetes', namespace: 'berth', service: 'berth-peers', port: 'peer' },
    'kubernetes',
  );
  t.same(
    load(`${PEERS}[peers.kubernetes]\nnamespace = "edge-1"\nservice = "b2"\nport = "p-5051"\n`).peers?.membership,
    { kind: 'kubernetes', namespace: 'edge-1', service: 'b2', port: 'p-5051' },
    'kubernetes as a sub-table',
  );
});

t.test('[peers] dns_servers and the kubernetes API knobs (a site DNS server; berth outside a pod)', async (t) => {
  const dir = peersDir(t);
  write(dir, 'k8s/token', 'token');
  write(dir, 'k8s/ca.crt', 'ca');
  const load = (text: string) => loadConfig({ file: write(dir, 'berth.toml', text), env: {}, cwd: dir });
  t.same(
    load(`${PEERS}dns = "berth-peers.site:5051"\ndns_servers = ["10.0.0.2", "10.0.0.3:5353", "FD00:0::2", "[FD00::3]:53"]\n`).peers?.membership,
    { kind: 'dns', name: 'berth-peers.site', port: 5051, servers: ['10.0.0.2', '10.0.0.3:5353', 'fd00::2', '[fd00::3]:53'] },
    'dns_servers: addresses with or without a port, IPv6 normalised',
  );
  t.notOk('servers' in (load(`${PEERS}dns = "berth-peers.site:5051"\n`).peers?.membership ?? {}), "no dns_servers: the system's resolvers");
  t.same(
    load(`${PEERS}kubernetes = { namespace = "berth", service = "berth-peers", port = "peer", api_server = "https://10.0.0.1:6443/", token_file = "k8s/token", ca_file = "k8s/ca.crt" }\n`).peers?.membership,
    { kind: 'kubernetes', namespace: 'berth', service: 'berth-peers', port: 'peer', apiServer: 'https://10.0.0.1:6443', tokenFile: join(dir, 'k8s/token'), caFile: join(dir, 'k8s/ca.crt') },
    'kubernetes: api_server as an origin, the files from the working directory',
  );
  t.same(
    load(`${PEERS}[peers.kubernetes]\nnamespace = "berth"\nservice = "berth-peers"\nport = "peer"\napi_server = "https://[FD00::1]"\n`).peers?.membership,
    { kind: 'kubernetes', namespace: 'berth', service: 'berth-peers', port: 'peer', apiServer: 'https://[fd00::1]' },
    'each of them alone; the others keep their in-cluster defaults',
  );
  const env = { BERTH_PEERS_LISTEN: '10.0.0.11:5051', BERTH_PEERS_KEY_FILE: join(dir, 'site.key'), BERTH_PEERS_DNS: 'berth-peers.site:5051', BERTH_PEERS_DNS_SERVERS: '10.0.0.2, [fd00::2]:53' };
  t.same(loadConfig({ env, cwd: dir }).peers?.membership, { kind: 'dns', name: 'berth-peers.site', port: 5051, servers: ['10.0.0.2', '[fd00::2]:53'] }, 'BERTH_PEERS_DNS_SERVERS, comma-separated');
  t.match(
    configError(t, () => loadConfig({ env: { ...env, BERTH_PEERS_DNS_SERVERS: 'ns1.site' }, cwd: dir })),
    { key: 'peers.dns_servers', file: 'environment BERTH_PEERS_DNS_SERVERS', message: /not a DNS server/ },
    'and its mistakes name the variable',
  );
});

t.test('[peers] defaults', async (t) => {
  const dir = peersDir(t);
  const c = loadConfig({ file: write(dir, 'berth.toml', `${PEERS}members = ["10.0.0.12:5051"]\n`), env: {}, cwd: dir });
  t.same(c.peers, {
    listen: '10.0.0.11:5051',
    host: '10.0.0.11',
    port: 5051,
    key: new SiteKey(join(dir, 'berth.toml'), 'peers.key_file', join(dir, 'site.key')),
    keyFile: join(dir, 'site.key'),
    membership: { kind: 'static', members: ['10.0.0.12:5051'] },
    tls: null,
    resolveIntervalMs: 30_000,
    timeouts: { connectMs: 1_000, headersMs: 10_000, bodyIdleMs: 30_000 },
    clockWindowMs: 30_000,
  });
  t.same(DEFAULTS.peers, { resolve_interval: '30s', connect_timeout: '1s', header_timeout: '10s', body_timeout: '30s', clock_window: '30s' });
});

t.test('every [peers] mistake names its key', async (t) => {
  const members = 'members = ["10.0.0.12:5051"]';
  const peers = (body: string) => `${PEERS}${body}\n`;
  const cases: [string, string, RegExp][] = [
    [`[peers]\nkey_file = "site.key"\n${members}`, 'peers.listen', /missing \(e\.g\. listen = "10\.0\.0\.11:5051"\)/],
    [`[peers]\nlisten = "0.0.0.0:5051"\nkey_file = "site.key"\n${members}`, 'peers.listen', /any-address cannot be reached/],
    [`[peers]\nlisten = "[::]:5051"\nkey_file = "site.key"\n${members}`, 'peers.listen', /any-address/],
    [`[peers]\nlisten = "10.0.0.11"\nkey_file = "site.key"\n${members}`, 'peers.listen', /needs a port/],
    [`[peers]\nlisten = "127.0.0.1:5050"\nkey_file = "site.key"\n${members}`, 'peers.listen', /is also server\.listen \("127\.0\.0\.1:5050"\)/],
    [`[server]\nlisten = "0.0.0.0:5051"\n${peers(members)}`, 'peers.listen', /is also server\.listen \("0\.0\.0\.0:5051"\)/],
    [`[server]\nlisten = "[FD00::11]:5051"\n[peers]\nlisten = "[fd00:0::11]:5051"\nkey_file = "site.key"\n${members}`, 'peers.listen', /is also server\.listen/],
    [`[peers]\nlisten = "10.0.0.11:5051"\n${members}`, 'peers.key_file', /missing \(e\.g\. key_file = "\/etc\/berth\/site\.key"\)/],
    [`[peers]\nlisten = "10.0.0.11:5051"\nkey_file = ""\n${members}`, 'peers.key_file', /must not be empty/],
    [peers(''), 'peers.members', /missing: \[peers\] needs exactly one of members = \[/],
    [peers(`${members}\ndns = "berth-peers:5051"`), 'peers.dns', /peers\.members is set too: \[peers\] takes exactly one of members, dns or kubernetes/],
    [peers('dns = "berth-peers:5051"\nkubernetes = { namespace = "b", service = "s", port = "p" }'), 'peers.kubernetes', /peers\.dns is set too/],
    [peers('members = []'), 'peers.members', /is empty/],
    [peers('members = "10.0.0.12:5051"'), 'peers.members', /expected an array of strings/],
    [peers('members = ["10.0.0.12"]'), 'peers.members', /"10\.0\.0\.12": needs a port/],
    [peers('members = ["0.0.0.0:5051"]'), 'peers.members', /any-address/],
    [peers('members = ["fd00::12:5051"]'), 'peers.members', /IPv6 address goes in brackets/],
    [peers('members = ["10.0.0.012:5051"]'), 'peers.members', /not a valid IPv4 address/],
    [peers('members = ["[FD00::12]:5051", "[fd00::12]:5051"]'), 'peers.members', /"\[fd00::12\]:5051" is listed twice \(as "\[fd00::12\]:5051"\)/],
    [peers('dns = "berth-peers"'), 'peers.dns', /needs a port/],
    [peers('dns = "10.0.0.1:5051"'), 'peers.dns', /is an address, not a name/],
    [peers('dns = 5051'), 'peers.dns', /expected a string, got integer 5051/],
    [peers('kubernetes = "berth/berth-peers"'), 'peers.kubernetes', /expected an inline table, got string .* \(e\.g\. kubernetes = \{ namespace = "berth"/],
    [peers('kubernetes = { namespace = "berth", service = "berth-peers" }'), 'peers.kubernetes.port', /missing \(e\.g\. port = "peer"\)/],
    [peers('kubernetes = { namespace = "berth", service = "berth-peers", port = 5051 }'), 'peers.kubernetes.port', /expected a string, got integer 5051/],
    [peers('kubernetes = { namespace = "berth", service = "berth-peers", port = "peer", name = "x" }'), 'peers.kubernetes.name', /unknown key \(known: namespace, service, port, api_server, token_file, ca_file\)/],
    [peers('kubernetes = { namespace = "berth", service = "berth-peers", port = "peer", apiserver = "https://10.0.0.1:6443" }'), 'peers.kubernetes.apiserver', /unknown key/],
    [peers('kubernetes = { namespace = "Berth", service = "berth-peers", port = "peer" }'), 'peers.kubernetes.namespace', /"Berth" is not a namespace \(a DNS label/],
    [peers('kubernetes = { namespace = "berth", service = "1-peers", port = "peer" }'), 'peers.kubernetes.service', /"1-peers" is not a Service name/],
    [peers('kubernetes = { namespace = "berth", service = "berth-peers", port = "peer_port" }'), 'peers.kubernetes.port', /"peer_port" is not a Service port's name/],
    [peers(`${members}\ntls_cert_file = "tls/peer.crt"`), 'peers.tls_key_file', /go together/],
    [peers(`${members}\ntls_key_file = "tls/peer.key"`), 'peers.tls_cert_file', /go together/],
    [peers(`${members}\ntls_cert_file = "tls/nope.crt"\ntls_key_file = "tls/peer.key"`), 'peers.tls_cert_file', /cannot read ".*nope\.crt": ENOENT/],
    [peers(`${members}\nca_file = "site-ca.crt"`), 'peers.ca_file', /needs tls_cert_file and tls_key_file/],
    [peers(`${members}\nclock_skew = "30s"`), 'peers.clock_skew', /unknown key \(known: listen, key_file, members, dns, dns_servers, kubernetes, tls_cert_file, tls_key_file, ca_file, resolve_interval, connect_timeout, header_timeout, body_timeout, clock_window\)/],
    [peers(`${members}\nkey = "s3cr3t"`), 'peers.key', /unknown key/],
    [peers(`${members}\nresolve_interval = "0"`), 'peers.resolve_interval', /must be more than 0/],
    [peers(`${members}\nconnect_timeout = "1"`), 'peers.connect_timeout', /"1" has no unit/],
    [peers(`${members}\nheader_timeout = "soon"`), 'peers.header_timeout', /is not a duration/],
    [peers(`${members}\nbody_timeout = "30d"`), 'peers.body_timeout', /too long/],
    [peers(`${members}\nclock_window = "0s"`), 'peers.clock_window', /must be more than 0/],
    [peers(`${members}\nclock_window = "1h"`), 'peers.clock_window', /is more than 5m: a captured request could be replayed/],
    ['peers = ["10.0.0.12:5051"]', 'peers', /expected a \[peers\] table/],
    // dns_servers: only with dns, addresses only.
    [peers(`${members}\ndns_servers = ["10.0.0.2"]`), 'peers.dns_servers', /only goes with dns = "name:port" .*peers\.members does not use DNS/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p" }\ndns_servers = ["10.0.0.2"]'), 'peers.dns_servers', /only goes with dns/],
    [peers('dns = "berth-peers:5051"\ndns_servers = []'), 'peers.dns_servers', /is empty: .*leave the key out for the system's resolvers/],
    [peers('dns = "berth-peers:5051"\ndns_servers = "10.0.0.2"'), 'peers.dns_servers', /expected an array of strings/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["ns1.site.example"]'), 'peers.dns_servers', /"ns1\.site\.example" is not a DNS server \(an IP address with an optional port/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["ns1.site.example:53"]'), 'peers.dns_servers', /is not an IPv4 address \(a DNS server is named by its address, not a host name\)/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["10.0.0.256"]'), 'peers.dns_servers', /"10\.0\.0\.256" is not a DNS server/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["10.0.0.2:0"]'), 'peers.dns_servers', /the port must be a number from 1 to 65535/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["10.0.0.2:dns"]'), 'peers.dns_servers', /the port must be a number/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["10.0.0.2:53:53"]'), 'peers.dns_servers', /not a DNS server/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["[10.0.0.2]:53"]'), 'peers.dns_servers', /"10\.0\.0\.2" is not an IPv6 address/],
    [peers('dns = "berth-peers:5051"\ndns_servers = ["FD00::2", "fd00::2"]'), 'peers.dns_servers', /"fd00::2" is listed twice/],
    // kubernetes: api_server https and address only, readable token_file and ca_file.
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", api_server = "http://10.0.0.1:6443" }'), 'peers.kubernetes.api_server', /must start with https:\/\//],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", api_server = "10.0.0.1:6443" }'), 'peers.kubernetes.api_server', /is not a URL|must start with http/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", api_server = "https://10.0.0.1:6443/k8s" }'), 'peers.kubernetes.api_server', /without a path/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", api_server = "https://10.0.0.1:6443/?x=1" }'), 'peers.kubernetes.api_server', /must not have a query/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", api_server = "https://admin:pw@10.0.0.1:6443" }'), 'peers.kubernetes.api_server', /must not carry credentials/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", api_server = "" }'), 'peers.kubernetes.api_server', /must not be empty/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", token_file = "nope.token" }'), 'peers.kubernetes.token_file', /cannot read ".*nope\.token": ENOENT/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", ca_file = "nope-ca.crt" }'), 'peers.kubernetes.ca_file', /cannot read ".*nope-ca\.crt": ENOENT/],
    [peers('kubernetes = { namespace = "b", service = "s", port = "p", ca_file = 1 }'), 'peers.kubernetes.ca_file', /expected a string, got integer 1/],
  ];
  for (const [text, key, message] of cases) {
    const dir = peersDir(t);
    const file = write(dir, 'berth.toml', text);
    const err = configError(t, () => loadConfig({ file, env: {}, cwd: dir }));
    t.match(err, { key, file, message }, `${key}: ${text.split('\n').pop()}`);
    t.ok(err.message.startsWith(`${file}: ${key}: `), 'message starts with file and key');
  }
});

t.test('[peers] from the environment: scalar keys and comma-separated members; the kubernetes table from the file only', async (t) => {
  const dir = peersDir(t);
  const file = write(dir, 'berth.toml', `${PEERS}kubernetes = { namespace = "berth", service = "berth-peers", port = "peer" }\n`);
  const c = loadConfig({ file, env: { BERTH_PEERS_LISTEN: '10.0.0.21:5051', BERTH_PEERS_CONNECT_TIMEOUT: '2s', BERTH_PEERS_CLOCK_WINDOW: '1m' }, cwd: dir });
  t.match(c.peers, { listen: '10.0.0.21:5051', host: '10.0.0.21', timeouts: { connectMs: 2_000, headersMs: 10_000 }, clockWindowMs: 60_000, membership: { kind: 'kubernetes' } }, 'env beats the file');

  // How the DaemonSet could do it without a file section at all, and how a systemd unit might.
  const env = { BERTH_PEERS_LISTEN: '10.0.0.11:5051', BERTH_PEERS_KEY_FILE: join(dir, 'site.key'), BERTH_PEERS_MEMBERS: ' 10.0.0.11:5051, 10.0.0.12:5051,,' };
  const fromEnv = loadConfig({ env, cwd: dir }).peers;
  t.match(fromEnv, { listen: '10.0.0.11:5051', membership: { kind: 'static', members: ['10.0.0.11:5051', '10.0.0.12:5051'] }, resolveIntervalMs: 30_000 });
  t.equal(fromEnv?.key.file, 'environment BERTH_PEERS_KEY_FILE', 'the key says where it was set');
  t.equal(loadConfig({ env: { ...env, BERTH_PEERS_MEMBERS: undefined, BERTH_PEERS_DNS: 'berth-peers.berth.svc:5051' }, cwd: dir }).peers?.membership.kind, 'dns');

  const errors: [NodeJS.ProcessEnv, string, RegExp][] = [
    [{ ...env, BERTH_PEERS_LISTEN: '0.0.0.0:5051' }, 'peers.listen', /any-address/],
    [{ ...env, BERTH_PEERS_HEADER_TIMEOUT: 'soon' }, 'peers.header_timeout', /is not a duration/],
    [{ ...env, BERTH_PEERS_KUBERNETES: 'berth/berth-peers/peer' }, 'peers.kubernetes', /inline table and can be set in the config file only/],
    [{ ...env, BERTH_PEERS_DNS: 'berth-peers:5051' }, 'peers.dns', /peers\.members is set too/],
  ];
  for (const [e, key, message] of errors) {
    const name = Object.entries(e).find(([k, v]) => v !== env[k as keyof typeof env])?.[0] ?? '';
    t.match(configError(t, () => loadConfig({ env: e, cwd: dir })), { key, file: `environment ${name}`, message }, name);
  }
  t.match(configError(t, () => loadConfig({ env: { BERTH_PEERS_LISTEN: '10.0.0.11:5051' }, cwd: dir })), { key: 'peers.key_file', file: 'environment BERTH_PEERS_LISTEN', message: /missing/ }, 'one real key switches the section on');
});

t.test('service links of a Service named berth-peers stay warnings when [peers] is set', async (t) => {
  const dir = peersDir(t);
  const file = write(dir, 'berth.toml', `${PEERS}kubernetes = { namespace = "berth", service = "berth-peers", port = "peer" }\n`);
  const links = berthServiceLinks();
  const { config, warnings } = loadConfigWithWarnings({ file, env: links, cwd: dir });
  t.same(config, loadConfig({ file, env: {}, cwd: dir }), 'the config is what it is without them');
  const peerLinks = Object.keys(links).filter((n) => n.startsWith('BERTH_PEERS_'));
  t.ok(peerLinks.length >= 8, `the kubelet's variables for berth-peers: ${peerLinks.join(' ')}`);
  for (const name of peerLinks) {
    const w = warnings.find((x) => x.file === `environment ${name}`);
    t.match(w, { key: `peers.${name.slice('BERTH_PEERS_'.length).toLowerCase()}`, message: /unknown key \(known: listen, key_file, .*enableServiceLinks: false/ }, name);
  }
  t.same(warnings.length, Object.keys(links).length, 'every one a warning, none an error');
});

t.test('the site key is a secret: read where used, checked by serve, never shown', async (t) => {
  const dir = peersDir(t);
  const file = write(dir, 'berth.toml', `${PEERS.replace('site.key', 'later.key')}members = ["10.0.0.12:5051"]\n`);
  const c = loadConfig({ file, env: {}, cwd: dir });
  t.pass('a config naming a missing key file loads (berth status need not read it)');
  t.match(unreadableSecrets(c), [{ file, key: 'peers.key_file', message: /".*later\.key" does not exist$/ }], 'serve refuses: missing');

  const short = 'only-twenty-bytes-ok';
  write(dir, 'later.key', `  ${short}\n\n`);
  const [tooShort, ...rest] = unreadableSecrets(c);
  t.same(rest, []);
  t.match(tooShort, { key: 'peers.key_file', message: /".*later\.key" holds 20 bytes \(surrounding whitespace removed\); at least 32 are needed, e\.g\. `head -c 32 \/dev\/urandom \| base64`/ }, 'serve refuses: under 32 bytes');
  t.notMatch(tooShort?.message, short, 'the contents are not quoted');

  write(dir, 'later.key', SITE_KEY);
  t.same(unreadableSecrets(c), [], 'a good key passes');
  t.same(c.peers?.key.reveal(), Buffer.from(SITE_KEY.trim()));
  write(dir, 'later.key', `${'x'.repeat(40)}\n`);
  t.same(c.peers?.key.reveal(), Buffer.from(SITE_KEY.trim()), 'read once and kept');

  const printed = [JSON.stringify(redactedConfig(c)), JSON.stringify(c), inspect(c, { depth: 10, showHidden: true }), String(c.peers?.key)];
  for (const text of printed) {
    t.notMatch(text, SITE_KEY.trim(), 'no key in print');
    t.match(text, /<redacted>/);
  }
  t.match(redactedConfig(c), { peers: { key: '<redacted>', keyFile: join(dir, 'later.key'), listen: '10.0.0.11:5051' } });
});

// SPEC "Configuration": every key, its default and its BERTH_* override. docs/configuration.md is the
// reference: each section has a table with a row per key, whose default is the built-in one.
t.test('docs/configuration.md has a row for every key with its built-in default, and config/berth.toml shows every key', async (t) => {
  const { TABLE_SECTIONS, LIST_SECTIONS } = await import('../../src/config/schema.js');
  const doc = readFileSync(join(REPO, 'docs/configuration.md'), 'utf8');
  const example = readFileSync(EXAMPLE, 'utf8');
  const defaults: Record<string, Record<string, unknown>> = {
    ...(DEFAULTS as unknown as Record<string, Record<string, unknown>>),
    upstream: DEFAULTS.upstreamKeys,
    prefetch: {},
  };
  for (const [section, keys] of Object.entries({ ...TABLE_SECTIONS, ...LIST_SECTIONS })) {
    const list = Object.hasOwn(LIST_SECTIONS, section);
    const heading = list ? `[[${section}]]` : `[${section}]`;
    const part = doc.split(/^## /m).find((p) => p.split('\n')[0]!.includes(`\`${heading}\``));
    t.ok(part, `docs/configuration.md has a section for ${heading}`);
    for (const key of Object.keys(keys)) {
      t.match(example, new RegExp(`^#?\\s*${key} = `, 'm'), `config/berth.toml shows ${section}.${key}`);
      const row = (part ?? '').split('\n').find((l) => new RegExp(`^\\| [^|]*\`${key}\``).test(l));
      t.ok(row, `docs/configuration.md has a row for ${section}.${key}`);
      const d = defaults[section]?.[key];
      if (row && (typeof d === 'string' || typeof d === 'boolean')) {
        t.ok(row.split('|')[2]!.includes(`\`${typeof d === 'string' ? `"${d}"` : d}\``), `its default is ${JSON.stringify(d)}: ${row.split('|')[2]!.trim()}`);
      }
    }
    if (!list) t.match(part ?? '', `BERTH_${section.toUpperCase()}_<KEY>`, `${heading}: its BERTH_* overrides are named`);
  }
});

// A cache dir in a kernel filesystem hung `berth serve` for ever (Node's recursive mkdir loops
// under /proc), and a NUL byte in it failed as exit 1 with Node's own words: both are config errors.
t.test('cache.dir: not in /proc, /sys or /dev, and no NUL byte: a config error naming the key', async (t) => {
  const cwd = tempDir(t);
  for (const dir of ['/proc/self/x', '/proc', '/sys/kernel/berth', '/dev/shm/../berth-cache', '/dev/berth']) {
    const err = configError(t, () => loadConfig({ file: null, env: { BERTH_CACHE_DIR: dir }, cwd }));
    t.match(err.message, /cache\.dir/, `${dir}: names the key`);
    t.match(err.message, /kernel/, `${dir}: says why`);
  }
  const nul = configError(t, () => loadConfig({ file: null, env: { BERTH_CACHE_DIR: '/srv/ca\0che' }, cwd }));
  t.match(nul.message, /cache\.dir.*NUL/, 'a NUL byte is named');
  t.equal(loadConfig({ file: null, env: { BERTH_CACHE_DIR: '/srv/proc/cache' }, cwd }).cache.dir, '/srv/proc/cache', 'a directory merely named proc is fine');
  t.equal(loadConfig({ file: null, env: { BERTH_CACHE_DIR: '/devices/cache' }, cwd }).cache.dir, '/devices/cache', 'and /devices is not /dev');
});
