/**
 * The command line as an operator meets it: every command has --help (exit
 * 0), bad usage and bad config exit 2 naming the key and the file, and the
 * daemon refuses to start on a bad config without touching anything.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { BERTH_BIN, startBerth } from '../harness/berth.js';
import { run, tempDirFor } from '../harness/procs.js';
import { berthServiceLinks } from '../harness/service-links.js';

const COMMANDS = ['serve', 'config', 'prefetch', 'export', 'import', 'status', 'verify', 'gc', 'unpin', 'sync', 'audit', 'configure', 'doctor'];

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
