/**
 * The command line as an operator meets it: every command has --help (exit
 * 0), bad usage and bad config exit 2 naming the key and the file, and the
 * daemon refuses to start on a bad config without touching anything.
 */
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { BERTH_BIN, startBerth } from '../harness/berth.js';
import { freePort, run, tempDirFor } from '../harness/procs.js';
import { berthServiceLinks } from '../harness/service-links.js';
import { Index } from '../../src/store/index-db.js';

const COMMANDS = ['serve', 'config', 'prefetch', 'export', 'import', 'inventory', 'keygen', 'status', 'verify', 'gc', 'unpin', 'sync', 'audit', 'configure', 'doctor'];

function berth(args: string[], env: NodeJS.ProcessEnv = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_')));
  return run(process.execPath, [BERTH_BIN, ...args], { env: { ...clean, ...env }, timeoutMs: 30_000 });
}

t.test('every command answers --help', async (t) => {
  const top = await berth(['--help']);
  t.equal(top.code, 0);
  for (const c of COMMANDS) {
    t.match(top.stdout, new RegExp(`^  ${c}\\b`, 'm'), `${c} is listed`);
    const r = await berth(c === 'configure' ? ['configure', 'containerd', '--help'] : [c, '--help']);
    t.equal(r.code, 0, `${c} --help exits 0`);
    t.match(r.stdout, /Usage: berth /, `${c} --help prints its usage`);
  }
  t.equal((await berth(['frobnicate'])).code, 2, 'an unknown command is bad usage');
  t.equal((await berth(['gc', '--no-such-flag'])).code, 2, 'an unknown flag is bad usage');
  t.match((await berth(['--version'])).stdout, /^\d+\.\d+\.\d+/);
});

// docs/commands.md is the command reference: every flag a command's --help lists is in its row.
t.test('docs/commands.md names every command and every flag its --help lists', async (t) => {
  const doc = fs.readFileSync(path.join(path.dirname(BERTH_BIN), '../../docs/commands.md'), 'utf8');
  for (const c of COMMANDS) {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${c}`));
    t.ok(row, `${c} has a row`);
    const help = (await berth(c === 'configure' ? ['configure', 'containerd', '--help'] : [c, '--help'])).stdout;
    const options = help.slice(help.indexOf('Options:'));
    for (const m of options.matchAll(/^\s+(?:(-[a-z]), )?(--[a-z][a-z-]*)/gm)) {
      const [, short, long] = m;
      if (['--help', '--config', '--json', '--verbose', '--quiet'].includes(long!)) continue;
      t.ok(row?.includes(long!) || (short !== undefined && row?.includes(`${short} `)), `${c} ${long}: in its row`);
    }
  }
});

// `berth status | head -3` and the like: a reader that goes away once it has enough once made the
// command die on EPIPE with "Unhandled 'error' event" and a stack trace on the operator's terminal.
t.test('output into a pipe whose reader went away: a quiet exit, no stack trace', async (t) => {
  const dir = await tempDirFor(t, 'berth-cli-epipe');
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(file, `[cache]\ndir = "${path.join(dir, 'cache')}"\n`);
  for (const args of [['--help'], ['config', '--config', file], ['status', '--config', file, '--json']]) {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_')));
    const child = spawn(process.execPath, [BERTH_BIN, ...args], { env: clean, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    t.equal(code, 0, `${args.join(' ')}: exit 0`);
    t.notMatch(stderr, /EPIPE|Unhandled|\n\s+at /, `${args.join(' ')}: nothing on stderr about it (${stderr.trim().split('\n')[0] ?? ''})`);
  }
});

t.test('bad config values exit 2 naming the key and the file; serve starts nothing', async (t) => {
  const dir = await tempDirFor(t, 'berth-cli');
  const cache = path.join(dir, 'cache');
  const cases: [string, string, RegExp][] = [
    ['max_size', `[cache]\ndir = "${cache}"\nmax_size = "12XB"\n`, /cache\.max_size/],
    ['tag_ttl', `[cache]\ndir = "${cache}"\ntag_ttl = "soon"\n`, /cache\.tag_ttl/],
    ['revalidate_timeout', `[cache]\ndir = "${cache}"\nrevalidate_timeout = "0"\n`, /cache\.revalidate_timeout/],
    ['unknown key', `[cache]\ndir = "${cache}"\ncolour = "blue"\n`, /cache\.colour/],
    ['listen', `[server]\nlisten = "127.0.0.1:99999"\n[cache]\ndir = "${cache}"\n`, /server\.listen/],
    ['upstream url', `[cache]\ndir = "${cache}"\n[[upstream]]\nregistry = "docker.io"\nurl = "ftp://x"\n`, /upstream\[0\]\.url/],
    ['a password in the file', `[cache]\ndir = "${cache}"\n[[upstream]]\nregistry = "docker.io"\nurl = "https://r"\nusername = "u"\npassword = "hunter2"\n`, /password_file/],
    ['TOML syntax', `[cache\ndir = 1`, /line/],
  ];
  for (const [name, text, key] of cases) {
    const file = path.join(dir, `${name.replace(/\W+/g, '-')}.toml`);
    fs.writeFileSync(file, text);
    const r = await berth(['serve', '--config', file]);
    t.equal(r.code, 2, `${name}: exit 2`);
    t.match(r.stderr, key, `${name}: names the key (${r.stderr.trim()})`);
    t.match(r.stderr, new RegExp(path.basename(file).replace(/\./g, '\\.')), `${name}: names the file`);
    t.notMatch(r.stderr, /hunter2/, `${name}: no secret in the message`);
  }
  t.notOk(fs.existsSync(cache), 'serve created nothing on a bad config');
  const env = await berth(['config'], { BERTH_CACHE_MAX_SIZE: 'lots' });
  t.equal(env.code, 2, 'a bad environment override: exit 2');
  t.match(env.stderr, /BERTH_CACHE_MAX_SIZE/, 'names the variable');
});

// SPEC "Command line": 2 is bad usage. `berth export` with a malformed image reference once exited 1
// (the reference was parsed deep in the export, as if the image had failed to fetch), and so did
// `berth prefetch`, after fetching the other images. Every malformed argument, of every command, is 2,
// named, before anything is fetched or written.
// Kubernetes gives every pod of a namespace BERTH_PORT=tcp://…, BERTH_SERVER_PORT=… for Services named
// berth, berth-server…; berth once refused to start on them, so one Service took every node's pulls down.
t.test('Kubernetes service-link variables: warned about and ignored; a bad value for a real key still exits 2', async (t) => {
  const links = berthServiceLinks();
  const dir = await tempDirFor(t, 'berth-cli-links');
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(file, `[cache]\ndir = "${path.join(dir, 'cache')}"\n`);

  const config = await berth(['config', '--config', file], links);
  t.equal(config.code, 0, `berth config works (${config.stderr.split('\n')[0]})`);
  t.match(JSON.parse(config.stdout), { server: { listen: '127.0.0.1:5050' }, harbor: null }, 'and prints the config as if they were not there');
  for (const name of ['BERTH_PORT', 'BERTH_SERVICE_HOST', 'BERTH_SERVER_PORT', 'BERTH_PEERS_PORT_5051_TCP_ADDR', 'BERTH_SERVER_SERVICE_PORT_PEERS']) {
    t.match(config.stderr, new RegExp(`^berth: warning: environment ${name}: .*ignored`, 'm'), `the warning names ${name}`);
  }

  const daemon = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: 'http://127.0.0.1:1' }], env: links });
  const warned = daemon.logs().filter((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.includes('ignored'));
  t.ok(warned.some((l) => String(l.msg).startsWith('environment BERTH_SERVER_PORT: server.port: ')), 'the daemon logs the warning (pino, level warn)');
  t.equal(warned.length, Object.keys(links).length, 'one line per variable');

  const bad = await berth(['serve', '--config', file], { ...links, BERTH_CACHE_MAX_SIZE: 'banana' });
  t.equal(bad.code, 2, 'a bad value for a real key: exit 2');
  t.match(bad.stderr, /environment BERTH_CACHE_MAX_SIZE: cache\.max_size: "banana" is not a size/, 'naming the variable and the key');
});

// SPEC "Audit": `berth audit [--since D] [--json]` lists the record. With more entries in the period than --limit,
// it once listed the oldest ones and dropped the newest without a word: the requests an operator looks for.
t.test('audit: --since picks the period, --limit keeps the newest and says what it left out, --json', async (t) => {
  const dir = await tempDirFor(t, 'berth-cli-audit');
  const cache = path.join(dir, 'cache');
  fs.mkdirSync(cache);
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(file, `[cache]\ndir = "${cache}"\n`);
  const now = Date.now();
  const digest = `sha256:${'d'.repeat(64)}`;
  const entry = (at: number, reference: string) => ({ at, registry: 'docker.io', repository: 'library/app', reference, digest, method: 'GET', decision: 'cache', reason: null, client: '127.0.0.1', username: null });
  const index = new Index(path.join(cache, 'index.db'));
  for (let i = 0; i < 3; i++) index.audit.record(entry(now - 3 * 86_400_000 + i, `old${i}`));
  for (let i = 0; i < 5; i++) index.audit.record(entry(now - 3_600_000 + i * 1000, `new${i}`));
  index.audit.record({ ...entry(now - 60_000, digest), username: 'robot$ci' });
  index.flush();
  index.close();

  const refs = (stdout: string) => (JSON.parse(stdout) as { reference: string }[]).map((e) => e.reference);
  const day = await berth(['audit', '--config', file, '--json']);
  t.equal(day.code, 0);
  t.same(refs(day.stdout), ['new0', 'new1', 'new2', 'new3', 'new4', digest], 'default: the last 24h, oldest first');
  const week = await berth(['audit', '--config', file, '--json', '--since', '7d']);
  t.same(refs(week.stdout).length, 9, '--since 7d: all of them');
  const date = await berth(['audit', '--config', file, '--json', '--since', new Date(now - 2 * 86_400_000).toISOString()]);
  t.same(refs(date.stdout).length, 6, '--since a date');
  const limited = await berth(['audit', '--config', file, '--json', '--since', '7d', '--limit', '2']);
  t.equal(limited.code, 0);
  t.same(refs(limited.stdout), ['new4', digest], '--limit 2: the two newest, oldest first');
  t.match(limited.stderr, /7 older entries .*not listed/, 'and says how many it left out');
  const text = await berth(['audit', '--config', file, '--since', '7d']);
  t.match(text.stdout, /cache\s+GET\s+docker\.io\/library\/app:new4 sha256:d+/, 'a line per entry in text');
  t.match(text.stdout, new RegExp(`docker\\.io/library/app@${digest}\\s.*user=robot\\$ci`), 'a digest reference is written repo@digest, with the user name');
  t.equal(text.stderr, '', 'nothing left out, nothing said');
  const none = await berth(['audit', '--config', file, '--since', '1s']);
  t.match(none.stdout, /no manifest requests recorded/);
});

// Config loading once read every password_file, so `berth status` failed (exit 2) for anyone who could not
// read the daemon's secrets. Now a secret is read where it is used; serve still refuses to start without it.
const ROOT = process.getuid?.() === 0;
t.test('a user who cannot read password_file: status works; what needs the secret names the key and the file', { skip: ROOT ? false : 'needs root to run berth as another user' }, async (t) => {
  // An upstream and a Harbor (on another port: a Harbor governs the upstreams on its own host) that want
  // Basic credentials for everything.
  const authorizations: (string | undefined)[] = [];
  const unauthorized = async (): Promise<string> => {
    const server = http.createServer((req, res) => {
      authorizations.push(req.headers.authorization);
      res.writeHead(401, { 'www-authenticate': 'Basic realm="test"', 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  const url = await unauthorized();
  const harborUrl = await unauthorized();

  const uid = Number((await run('id', ['-u', 'nobody'])).stdout);
  const gid = Number((await run('id', ['-g', 'nobody'])).stdout);
  const dir = await tempDirFor(t, 'berth-cli-secret');
  fs.chmodSync(dir, 0o755);
  const cache = path.join(dir, 'cache');
  fs.mkdirSync(cache);
  fs.chownSync(cache, uid, gid);
  const secret = 'hunter2-only-root-reads-this';
  const pw = path.join(dir, 'edge.password');
  fs.writeFileSync(pw, `${secret}\n`, { mode: 0o600 });
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(
    file,
    [
      `[server]\nlisten = "127.0.0.1:${await freePort()}"`,
      `[cache]\ndir = "${cache}"`,
      `[[upstream]]\nregistry = "docker.io"\nurl = "${url}"\nusername = "edge"\npassword_file = "${pw}"\nconnect_timeout = "2s"`,
      `[harbor]\nurl = "${harborUrl}"\nusername = "robot$edge"\npassword_file = "${pw}"`,
      '',
    ].join('\n'),
  );
  // Without tap's coverage hooks too: they would write into the checkout as nobody.
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_') && k !== 'NODE_OPTIONS' && k !== 'NODE_V8_COVERAGE'));
  const asNobody = (args: string[]) =>
    run('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', process.execPath, BERTH_BIN, ...args, '--config', file], { env: clean, timeoutMs: 30_000 });
  const unreadable = (key: string) => new RegExp(`berth\\.toml: ${key.replace(/[.[\]]/g, '\\$&')}: cannot read "${pw.replace(/\./g, '\\.')}": EACCES`);
  const outputs: string[] = [];

  const config = await asNobody(['config']);
  outputs.push(config.stdout, config.stderr);
  t.equal(config.code, 0, 'berth config works');
  t.match(config.stderr, /^berth: warning: .*upstream\[0\]\.password_file: cannot read .*EACCES.*; berth serve needs it$/m, 'and says which secret this user cannot read');
  const status = await asNobody(['status']);
  outputs.push(status.stdout, status.stderr);
  t.equal(status.code, 0, `berth status works (${status.stderr.trim().split('\n')[0] ?? ''})`);
  t.match(status.stdout, /^cache\s+0B of 20GiB/m, 'and reports the cache');
  t.match(status.stdout, /^policy\s+no snapshot yet/m, 'and the policy, with [harbor] configured');
  t.match(status.stdout, /^upstream\s+docker\.io .*: reachable, but asks for credentials: /m, 'the upstream that asked for credentials is reachable');
  t.match(status.stdout, unreadable('upstream[0].password_file'), 'and says why it could not be answered');

  const prefetch = await asNobody(['prefetch', 'docker.io/library/app:v1']);
  outputs.push(prefetch.stdout, prefetch.stderr);
  t.equal(prefetch.code, 1, 'prefetch needs the secret: fails');
  t.match(prefetch.stderr, unreadable('upstream[0].password_file'), 'naming the key and the file');

  const sync = await asNobody(['sync']);
  outputs.push(sync.stdout, sync.stderr);
  t.equal(sync.code, 1, 'sync needs Harbor\'s secret: fails');
  t.match(sync.stderr, unreadable('harbor.password_file'), 'naming the key and the file');

  const serve = await asNobody(['serve']);
  outputs.push(serve.stdout, serve.stderr);
  t.equal(serve.code, 2, 'serve needs every secret: refuses to start, exit 2');
  t.match(serve.stderr, unreadable('upstream[0].password_file'), 'naming the key and the file');

  t.notOk(authorizations.some((a) => a !== undefined), 'no credential was sent while nobody could read it');
  for (const text of outputs) t.notMatch(text, secret, 'the secret appears nowhere');

  // The same config for root, who can read it: the secret is read when the upstream asks for it, and sent.
  const asRoot = await berth(['prefetch', 'docker.io/library/app:v1', '--config', file]);
  t.equal(asRoot.code, 1, 'root: the upstream still refuses (it refuses everyone)');
  t.ok(authorizations.includes(`Basic ${Buffer.from(`edge:${secret}`).toString('base64')}`), 'but berth read the secret and sent it');
});
