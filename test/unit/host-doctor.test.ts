/**
 * `berth doctor` end to end on its own parts: real files (containerd config,
 * certs.d written by configure), a berth stand-in and an upstream on loopback,
 * a port nobody listens on for what is down. containerd's version is handed in.
 */
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { issueLeaf, makeCa } from '../harness/pki.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { applyPlan, planConfigure } from '../../src/host/certs-dir.js';
import { parseContainerdVersion } from '../../src/host/containerd-config.js';
import { runDoctor, type DoctorOptions } from '../../src/host/doctor.js';
import { formatFinding, hasErrors, type Finding } from '../../src/host/findings.js';
import { upstreamFindings } from '../../src/host/probes.js';
import { pino } from 'pino';
import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { ReplayGuard, verifyPeerRequest } from '../../src/peers/auth.js';
import { listSite, listenFinding, peerFindings, probePeers } from '../../src/host/peer-checks.js';
import { startDnsServer } from '../harness/dns-server.js';
import { startK8sSim } from '../k8s-sim/index.js';

/** Answers GET /v2/ like a registry (berth and Distribution both send the header). */
async function fakeRegistry(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const server = http.createServer((req, res) => {
    if (req.url === '/v2/') res.writeHead(200, { 'Docker-Distribution-API-Version': 'registry/2.0', 'Content-Type': 'application/json' }).end('{}');
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

/** A port that refuses connections: bound once, then released. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface Setup {
  dir: string;
  hostsDir: string;
  config: Config;
  berthUrl: string;
  ctdConfig: (text: string) => string;
}

async function setup(t: { teardown(fn: () => unknown): void }, berthUp: boolean): Promise<Setup> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-doctor-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const upstream = await fakeRegistry(t);
  const berthUrl = berthUp ? await fakeRegistry(t) : `http://127.0.0.1:${await closedPort()}`;
  const downPort = await closedPort();
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(
    file,
    `[server]\nlisten = "${berthUrl.slice('http://'.length)}"\n[cache]\ndir = "${dir}/cache"\nmax_size = "1MiB"\n` +
      `[[upstream]]\nregistry = "docker.io"\nurl = "${upstream}"\n` +
      `[[upstream]]\nregistry = "quay.io"\nurl = "http://127.0.0.1:${downPort}"\nconnect_timeout = "1s"\n`,
  );
  const config = loadConfig({ file, env: {} });
  const hostsDir = path.join(dir, 'certs.d');
  await applyPlan(await planConfigure({ hostsDir, berthUrl, noFallback: false, targets: config.upstreams.map((u) => ({ registry: u.registry, upstreamUrl: u.url })) }));
  const ctdConfig = (text: string) => {
    const p = path.join(dir, 'containerd.toml');
    fs.writeFileSync(p, text);
    return p;
  };
  return { dir, hostsDir, config, berthUrl, ctdConfig };
}

const detect = (version: string): DoctorOptions['detect'] => async () => ({ bin: '/usr/bin/containerd', raw: version, version: parseContainerdVersion(`containerd x ${version}`) });
const by = (fs: Finding[], check: string) => fs.filter((f) => f.check === check);

t.test('a configured node: no errors; an unreachable upstream is a warning', async (t) => {
  const s = await setup(t, true);
  const findings = await runDoctor({
    config: s.config,
    berthUrl: s.berthUrl,
    containerdConfig: s.ctdConfig(`version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "${s.hostsDir}"\n`),
    detect: detect('1.6.20'),
    timeoutMs: 2000,
  });
  t.notOk(hasErrors(findings), findings.map(formatFinding).join('\n'));
  t.same(by(findings, 'containerd.version').map((f) => f.level), ['ok']);
  t.same(by(findings, 'containerd.config_path').map((f) => f.level), ['ok']);
  t.same(by(findings, 'berth.live').map((f) => f.level), ['ok']);
  t.same(by(findings, 'hosts.berth').map((f) => f.level), ['ok', 'ok'], 'docker.io and quay.io both send pulls to berth first');
  const ups = by(findings, 'upstream.reachable');
  t.same(ups.map((f) => f.level), ['ok', 'warn']);
  t.match(ups[1]?.what, /upstream quay\.io .* is unreachable/);
  t.same(by(findings, 'cache.disk').map((f) => f.level), ['ok']);
  for (const f of findings) t.match(formatFinding(f), f.level === 'ok' ? /^ok {5}\S/ : /^(warn |error) {2}.+ — fix: .+/, 'one line: level, what, fix');
});

t.test("containerd 2.1 with a ':' config_path: an error naming the fix; 1.6: a warning", async (t) => {
  const s = await setup(t, true);
  const cfg = s.ctdConfig(`version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '${s.hostsDir}:/etc/docker/certs.d'\n`);
  const f21 = await runDoctor({ config: s.config, berthUrl: s.berthUrl, containerdConfig: cfg, detect: detect('v2.1.4'), timeoutMs: 2000 });
  const cp = by(f21, 'containerd.config_path');
  t.equal(cp[0]?.level, 'error');
  t.match(cp[0]?.fix, new RegExp(`config_path = "${s.hostsDir}" \\(one directory\\)`));
  t.ok(hasErrors(f21));
  t.same(by(f21, 'hosts.berth').map((f) => f.level), ['ok', 'ok'], 'hosts.toml found through the first listed directory');

  const f16 = await runDoctor({ config: s.config, berthUrl: s.berthUrl, containerdConfig: cfg, detect: detect('1.6.20'), timeoutMs: 2000 });
  t.equal(by(f16, 'containerd.config_path')[0]?.level, 'warn');
  t.notOk(hasErrors(f16));
});

t.test('a stopped berth is an error', async (t) => {
  const s = await setup(t, false);
  const findings = await runDoctor({ config: s.config, berthUrl: s.berthUrl, hostsDir: s.hostsDir, containerdConfig: s.ctdConfig(`version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "${s.hostsDir}"\n`), detect: detect('1.6.20'), timeoutMs: 2000 });
  const live = by(findings, 'berth.live');
  t.equal(live[0]?.level, 'error');
  t.match(live[0]?.what, /is not answering \(ECONNREFUSED\)/);
  t.match(live[0]?.fix, /systemctl start berth/);
  t.ok(hasErrors(findings));
});

t.test('hosts.toml problems: missing, server-only, not naming berth, a stray file', async (t) => {
  const s = await setup(t, true);
  fs.rmSync(path.join(s.hostsDir, 'quay.io'), { recursive: true });
  fs.writeFileSync(path.join(s.hostsDir, 'docker.io/hosts.toml'), `server = "${s.berthUrl}"\n`);
  fs.mkdirSync(path.join(s.hostsDir, 'ghcr.io'));
  fs.writeFileSync(path.join(s.hostsDir, 'ghcr.io/hosts.toml'), `[host."${s.berthUrl}"]\ncapabilities = ["pull"]\n`);
  const run = () => runDoctor({ config: s.config, berthUrl: s.berthUrl, hostsDir: s.hostsDir, detect: detect('1.6.20'), timeoutMs: 2000 });

  let hosts = by(await run(), 'hosts.berth');
  t.equal(hosts[0]?.level, 'error');
  t.match(hosts[0]?.what, /docker\.io: .* has `server` but no \[host\."…"\] table/);
  t.equal(hosts[1]?.level, 'error');
  t.match(hosts[1]?.what, /quay\.io: no .*quay\.io\/hosts\.toml/);
  t.match(hosts[1]?.fix, new RegExp(`sudo berth configure containerd --hosts-dir ${s.hostsDir}`));

  fs.writeFileSync(path.join(s.hostsDir, 'docker.io/hosts.toml'), 'server = "https://registry-1.docker.io"\n[host."https://mirror.example"]\n');
  const findings = await run();
  hosts = by(findings, 'hosts.berth');
  t.match(hosts[0]?.what, /does not name berth .* containerd tries https:\/\/mirror\.example, https:\/\/registry-1\.docker\.io/);
  const stray = by(findings, 'hosts.stray');
  t.equal(stray.length, 1);
  t.match(stray[0]?.what, /ghcr\.io: .* sends pulls to berth, which has no \[\[upstream\]\] for ghcr\.io/);
});

t.test("clock skew against a private-CA Harbor: doctor trusts [harbor] ca_file and reports the skew", async (t) => {
  const s = await setup(t, true);
  const ca = await makeCa(s.dir, 'harbor-ca');
  const leaf = await issueLeaf(ca, 'harbor', { ips: ['127.0.0.1'] });
  const pings: string[] = [];
  // Harbor's clock runs ten minutes ahead of this node's.
  const server = https.createServer({ cert: fs.readFileSync(leaf.certFile), key: fs.readFileSync(leaf.keyFile) }, (req, res) => {
    if (req.url === '/api/v2.0/ping') pings.push(req.url);
    res.setHeader('Date', new Date(Date.now() + 600_000).toUTCString());
    if (req.url === '/v2/') res.writeHead(200, { 'Docker-Distribution-API-Version': 'registry/2.0', 'Content-Type': 'application/json' }).end('{}');
    else if (req.url === '/api/v2.0/ping') res.writeHead(200, { 'Content-Type': 'text/plain' }).end('Pong');
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const harborUrl = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const file = path.join(s.dir, 'harbor.toml');
  fs.writeFileSync(file, `[cache]\ndir = "${s.dir}/cache"\n[[upstream]]\nregistry = "docker.io"\nurl = "${s.berthUrl}"\n[harbor]\nurl = "${harborUrl}"\nca_file = "${ca.certFile}"\nprojects = ["edge"]\n`);
  const config = loadConfig({ file, env: {} });

  const findings = await runDoctor({ config, berthUrl: s.berthUrl, hostsDir: s.hostsDir, detect: detect('1.6.20'), timeoutMs: 2000 });
  t.same(by(findings, 'harbor.reachable').map((f) => f.level), ['ok'], 'the ca_file is trusted for the reachability check');
  const clock = by(findings, 'harbor.clock');
  t.same(clock.map((f) => f.level), ['warn'], findings.map(formatFinding).join('\n'));
  t.match(clock[0]?.what, /this node's clock is \d+ s behind Harbor's/);
  t.ok(pings.length > 0, 'the clock was read from Harbor\'s ping');
});

t.test('extra checks plug in; one that throws becomes an error line', async (t) => {
  const s = await setup(t, true);
  const findings = await runDoctor({
    config: s.config,
    berthUrl: s.berthUrl,
    hostsDir: s.hostsDir,
    detect: detect('1.6.20'),
    timeoutMs: 2000,
    extraChecks: [async (ctx) => [{ level: 'ok', check: 'x.extra', what: `saw ${ctx.berthUrl}` }], async () => Promise.reject(new Error('boom'))],
  });
  t.same(by(findings, 'x.extra').map((f) => f.what), [`saw ${s.berthUrl}`]);
  t.match(by(findings, 'doctor.check')[0]?.what, /boom/);
});

t.test('an upstream asking for credentials from a password_file doctor cannot read: an error naming the key', async (t) => {
  const server = http.createServer((_req, res) => res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="x"' }).end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-doctor-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'berth.toml');
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  fs.writeFileSync(file, `[[upstream]]\nregistry = "docker.io"\nurl = "${url}"\nusername = "u"\npassword_file = "${dir}/gone"\n`);
  const [finding] = await upstreamFindings(loadConfig({ file, env: {} }).upstreams, 2000, pino({ level: 'silent' }));
  t.equal(finding?.level, 'error');
  t.match(finding?.what, /upstream\[0\]\.password_file: cannot read ".*gone": ENOENT/);
  t.match(finding?.fix, /upstream\[0\]\.password_file readable/);
});

/**
 * Site peers: small peer listeners on loopback that check signatures with the real
 * verifyPeerRequest, each with its own key or clock, as doctor meets them on a site.
 */
interface PeerListener {
  id: string;
  requests: number;
}

async function peerListener(t: { teardown(fn: () => unknown): void }, key: Buffer, clockOffsetMs = 0): Promise<PeerListener> {
  const guard = new ReplayGuard({ windowMs: 30_000 });
  const state = { id: '', requests: 0 };
  const server = http.createServer((req, res) => {
    state.requests++;
    const now = Date.now() + clockOffsetMs;
    res.setHeader('Date', new Date(now).toUTCString());
    const verdict = verifyPeerRequest(key, { method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers, now }, guard);
    if (!verdict.ok) res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    else res.writeHead(200, { 'Docker-Distribution-API-Version': 'registry/2.0', 'Content-Type': 'application/json' }).end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  state.id = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return state;
}

function writeKey(dir: string, name: string, key: Buffer, mode = 0o600): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, key.toString('base64') + '\n', { mode });
  fs.chmodSync(file, mode);
  return file;
}

function peersConfig(dir: string, peers: string): Config {
  const file = path.join(dir, `peers-${Math.random().toString(36).slice(2)}.toml`);
  fs.writeFileSync(file, `[server]\nlisten = "127.0.0.1:${5050}"\n[cache]\ndir = "${dir}/cache"\n[[upstream]]\nregistry = "docker.io"\nurl = "http://127.0.0.1:1"\n[peers]\n${peers}`);
  return loadConfig({ file, env: {} });
}

/** The site key as loadSiteKey reads it: the base64 text's bytes. */
const keyBytes = (raw: Buffer) => Buffer.from(raw.toString('base64'));

t.test('peers: each member probed with a signed GET /v2/; wrong key, far clock, a plain registry, one down; each with its fix', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-doctor-peers-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const raw = randomBytes(32);
  const keyFile = writeKey(dir, 'site.key', raw);
  const key = keyBytes(raw);
  const self = await peerListener(t, key);
  const good = await peerListener(t, key);
  const otherKey = await peerListener(t, keyBytes(randomBytes(32)));
  const drifting = await peerListener(t, key, 12_000);
  const farClock = await peerListener(t, key, 90_000);
  const registry = (await fakeRegistry(t)).slice('http://'.length);
  const down = `127.0.0.1:${await closedPort()}`;
  const members = [self.id, good.id, otherKey.id, drifting.id, farClock.id, registry, down];
  const config = peersConfig(dir, `listen = "${self.id}"\nkey_file = "${keyFile}"\nmembers = [${members.map((m) => `"${m}"`).join(', ')}]\n`);
  const s = await setup(t, true);

  const findings = await runDoctor({ config, berthUrl: s.berthUrl, hostsDir: s.hostsDir, detect: detect('1.6.20'), timeoutMs: 2000 });
  const text = findings.map(formatFinding).join('\n');
  t.same(by(findings, 'peers.key').map((f) => f.level), ['ok'], text);
  t.same(by(findings, 'peers.listen').map((f) => f.level), ['ok'], 'loopback listen with loopback members: fine');
  t.match(by(findings, 'peers.listen')[0]?.what, new RegExp(`peer listener ${self.id} is on this host \\(lo\\), apart from containerd's 127\\.0\\.0\\.1:5050`));
  t.match(by(findings, 'peers.members')[0], { level: 'ok', what: /^6 other members from the static list/ });
  t.same(by(findings, 'peers.self').map((f) => f.level), ['ok'], "this node's own listener accepts the key");

  const member = (id: string) => by(findings, 'peers.member').find((f) => f.what.startsWith(`peer ${id} `));
  t.match(member(good.id), { level: 'ok', what: /accepts this node's signature; its clock is (within 1 s of ours|1 s (ahead of|behind) ours)$/ });
  t.match(member(otherKey.id), { level: 'error', what: /refuses this node's signature \(401\): it holds another site key/, fix: /same key_file contents/ });
  t.match(member(drifting.id), { level: 'ok' }, 'a clock 12 s off is still inside the window');
  t.match(member(farClock.id), { level: 'error', what: /refuses this node's signature \(401\): its clock is (89|90|91) s ahead of ours, beyond clock_window \(±30 s\)/, fix: /NTP/ });
  t.match(member(registry), { level: 'error', what: /answers GET \/v2\/ without a signature \(200\): a registry, not a berth peer listener/, fix: /\[peers\] listen address/ });
  t.match(member(down), { level: 'warn', what: /unreachable \(ECONNREFUSED\): pulls there go to the next member or the upstream/, fix: /TCP port \d+/ });
  t.ok(otherKey.requests > 0 && farClock.requests > 0, 'the peers were asked');

  const clock = by(findings, 'peers.clock');
  t.match(clock.find((f) => f.what.includes(drifting.id)), { level: 'warn', what: /its clock is (11|12|13) s ahead of ours; past clock_window/, fix: /NTP/ });
  t.match(clock.find((f) => f.what.includes(farClock.id)), { level: 'error', what: /beyond clock_window/ });
  t.notOk(clock.some((f) => f.what.includes(good.id)), 'a good clock has no line of its own when others are off');
  for (const f of by(findings, 'peers.member')) t.notMatch(f.what + (f.fix ?? ''), raw.toString('base64'), 'the key appears nowhere');
});

t.test('peers: clocks in step are one ok line; a peer sees our signature only with the right key', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-doctor-peers-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const raw = randomBytes(32);
  const keyFile = writeKey(dir, 'site.key', raw);
  const a = await peerListener(t, keyBytes(raw));
  const b = await peerListener(t, keyBytes(raw));
  const config = peersConfig(dir, `listen = "${a.id}"\nkey_file = "${keyFile}"\nmembers = ["${a.id}", "${b.id}"]\n`);
  const findings = await peerFindings(config, { timeoutMs: 2000, logger: pino({ level: 'silent' }) });
  t.notOk(hasErrors(findings), findings.map(formatFinding).join('\n'));
  t.match(by(findings, 'peers.clock'), [{ level: 'ok', what: /^clocks of 1 peer within 1 s of this node's$/ }]);

  // The daemon on this node still runs with the key before a rotation.
  const rotated = peersConfig(dir, `listen = "${a.id}"\nkey_file = "${writeKey(dir, 'new.key', randomBytes(32))}"\nmembers = ["${a.id}", "${b.id}"]\n`);
  const after = await peerFindings(rotated, { timeoutMs: 2000, logger: pino({ level: 'silent' }) });
  t.match(by(after, 'peers.self'), [{ level: 'error', what: /this node's peer listener .* refuses this node's signature \(401\).*: the daemon runs with another key than key_file holds now/, fix: /restart berth/ }]);
});

t.test('peers: the key file: missing, too short, readable by everyone', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-doctor-peers-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const down = `127.0.0.1:${await closedPort()}`;
  const run = async (keyFile: string) => by(await peerFindings(peersConfig(dir, `listen = "${down}"\nkey_file = "${keyFile}"\nmembers = ["${down}"]\n`), { timeoutMs: 2000, logger: pino({ level: 'silent' }) }), 'peers.key')[0];

  t.match(await run(path.join(dir, 'absent.key')), { level: 'error', what: /peers\.key_file: ".*absent\.key" does not exist: berth serve refuses to start without it/, fix: /head -c 32 \/dev\/urandom \| base64 > .*absent\.key.*same file to every node/ });
  const short = path.join(dir, 'short.key');
  fs.writeFileSync(short, 'only-sixteen-byt\n', { mode: 0o600 });
  t.match(await run(short), { level: 'error', what: /holds 16 bytes .* at least 32/ });
  t.match(await run(writeKey(dir, 'open.key', randomBytes(32), 0o644)), { level: 'warn', what: /readable by every user of this node \(mode 644\)/, fix: /chmod 600/ });
  t.match(await run(writeKey(dir, 'closed.key', randomBytes(32), 0o640)), { level: 'ok' });
});

t.test('peers: listen must be an address of this host, and not loopback when the others are not', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-doctor-peers-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const keyFile = writeKey(dir, 'site.key', randomBytes(32));
  const iface = (address: string, family: 'IPv4' | 'IPv6' = 'IPv4'): os.NetworkInterfaceInfo =>
    family === 'IPv4'
      ? { address, family, netmask: '255.255.255.0', mac: '00:00:00:00:00:00', internal: false, cidr: `${address}/24` }
      : { address, family, netmask: 'ffff:ffff:ffff:ffff::', mac: '00:00:00:00:00:00', internal: false, cidr: `${address}/64`, scopeid: 0 };
  const host = () => ({ lo: [iface('127.0.0.1'), iface('::1', 'IPv6')], eth0: [iface('10.0.0.11'), iface('fd00::11', 'IPv6')] });
  const cfg = (listen: string, members: string[]) => peersConfig(dir, `listen = "${listen}"\nkey_file = "${keyFile}"\nmembers = [${members.map((m) => `"${m}"`).join(', ')}]\n`);

  t.match(await listenFinding(cfg('10.0.0.11:5051', ['10.0.0.11:5051', '10.0.0.12:5051']), host), { level: 'ok', what: /on this host \(eth0\), apart from containerd's 127\.0\.0\.1:5050/ });
  t.match(await listenFinding(cfg('[FD00:0::11]:5051', ['[fd00::11]:5051', '[fd00::12]:5051']), host), { level: 'ok', what: /\(eth0\)/ }, 'IPv6 compared in one normal form');
  t.match(await listenFinding(cfg('10.0.0.99:5051', ['10.0.0.99:5051', '10.0.0.12:5051']), host), { level: 'error', what: /10\.0\.0\.99:5051 is not an address of this host: berth serve cannot listen there/, fix: /this host has 10\.0\.0\.11, fd00::11/ });
  t.match(await listenFinding(cfg('127.0.0.1:5051', ['127.0.0.1:5051', '10.0.0.12:5051']), host), { level: 'warn', what: /loopback address: the other nodes cannot reach this one/ });
  t.match(await listenFinding(cfg('localhost:5051', ['localhost:5051', '127.0.0.2:5051']), host), { level: 'ok', what: /\(lo\)/ }, 'a name is resolved');
});

t.test('peers: the members as the daemon reads them: a list without this node, DNS answers and failures, Kubernetes outside a pod and in one', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-doctor-peers-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const keyFile = writeKey(dir, 'site.key', randomBytes(32));
  const silent = pino({ level: 'silent' });
  const down = `127.0.0.1:${await closedPort()}`;

  const notListed = await peerFindings(peersConfig(dir, `listen = "${down}"\nkey_file = "${keyFile}"\nmembers = ["127.0.0.2:5051"]\n`), { timeoutMs: 2000, logger: silent });
  t.match(by(notListed, 'peers.members'), [{ level: 'warn', what: /this node \(127\.0\.0\.1:\d+\) is not in \[peers\] members/, fix: /this one included/ }]);

  const dns = await startDnsServer(t);
  const resolver = new Resolver({ timeout: 1000, tries: 1 });
  resolver.setServers([dns.address]);
  dns.set('berth-peers.site.test', { a: ['127.0.0.1', '127.0.0.2', '127.0.0.3'] });
  const dnsPeers = peersConfig(dir, `listen = "127.0.0.1:5051"\nkey_file = "${keyFile}"\ndns = "berth-peers.site.test:5051"\n`).peers!;
  t.same(await listSite(dnsPeers, { logger: silent, timeoutMs: 2000, resolver }), { self: '127.0.0.1:5051', source: 'DNS name berth-peers.site.test (port 5051)', members: ['127.0.0.2:5051', '127.0.0.3:5051'] });
  dns.delete('berth-peers.site.test');
  t.same((await listSite(dnsPeers, { logger: silent, timeoutMs: 2000, resolver })).members, [], 'no such name: no peers, and no error');
  dns.failWith('SERVFAIL');
  t.match(await listSite(dnsPeers, { logger: silent, timeoutMs: 2000, resolver }), { members: [], error: /cannot resolve berth-peers\.site\.test \(ESERVFAIL\)/ });

  const k8sPeers = peersConfig(dir, `listen = "10.0.0.11:5051"\nkey_file = "${keyFile}"\nkubernetes = { namespace = "berth", service = "berth-peers", port = "peer" }\n`);
  const outside = await peerFindings(k8sPeers, { timeoutMs: 2000, logger: silent, list: { kubernetes: { env: {} } } });
  t.match(by(outside, 'peers.members'), [{ level: 'error', what: /EndpointSlices of berth\/berth-peers \(port "peer"\): cannot list them: .*KUBERNETES_SERVICE_HOST/, fix: /kubectl -n berth exec ds\/berth -- berth doctor/ }]);

  const sim = await startK8sSim(t, { namespace: 'berth', service: 'berth-peers' });
  sim.put({ name: 'berth-peers-abcde', endpoints: [{ addresses: ['10.0.0.11'] }, { addresses: ['10.0.0.12'] }, { addresses: ['10.0.0.13'], ready: false }], ports: [{ name: 'peer', port: 5051 }] });
  const inside = await listSite(k8sPeers.peers!, { logger: silent, timeoutMs: 2000, kubernetes: { apiServer: sim.url, caFile: sim.caFile, tokenFile: sim.tokenFile } });
  t.same(inside, { self: '10.0.0.11:5051', source: 'EndpointSlices of berth/berth-peers (port "peer")', members: ['10.0.0.12:5051'] }, 'ready endpoints, this node left out');
});

t.test('peers: a user who cannot read the site key still learns who answers, and why the signature was not checked', async (t) => {
  const listener = await peerListener(t, keyBytes(randomBytes(32)));
  const registry = (await fakeRegistry(t)).slice('http://'.length);
  const probes = await probePeers([listener.id, registry], { scheme: 'http', key: { error: 'peers.key_file: "/etc/berth/site.key" is not readable by this user (uid 1000)' }, timeoutMs: 2000, clockWindowMs: 30_000 });
  t.match(probes[0], { peer: listener.id, reachable: true, signed: false, status: 401, error: /^answers \(401 to an unsigned request\), but this user cannot sign: peers\.key_file: .* not readable/, problem: 'no-key' });
  t.match(probes[1], { reachable: true, signed: false, status: 200, error: /answers an unsigned GET \/v2\/ with 200: not a berth peer listener/, problem: 'not-a-peer' });
});
