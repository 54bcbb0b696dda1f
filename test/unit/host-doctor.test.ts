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
