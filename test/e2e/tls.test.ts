/**
 * TLS both ways with real parts: a private CA made with openssl, Distribution
 * serving http.tls as the upstream, berth serving HTTPS itself, containerd
 * trusting berth through the hosts.toml `ca`, and each kind of certificate
 * failure answered fast with the reason; a rotated certificate is served to
 * new connections while a transfer that started before completes.
 */
import t from 'tap';
import fs from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import path from 'node:path';
import { createHash, X509Certificate } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { tempDirFor, waitFor } from '../harness/procs.js';
import { issueLeaf, makeCa } from '../harness/pki.js';

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** GET over HTTPS trusting `ca`; resolves with status and JSON body. */
function getJson(url: string, ca?: Buffer): Promise<{ status: number; body: unknown; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    https.get(url, { ...(ca ? { ca } : {}) }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data ? (JSON.parse(data) as unknown) : null, ms: Date.now() - started }));
    }).on('error', reject);
  });
}
function peerFingerprint(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.destroy();
      resolve(fp);
    });
    s.on('error', reject);
  });
}

t.test('TLS both ways', async (t) => {
  const work = await tempDirFor(t, 'berth-tls');
  const ca = await makeCa(work, 'site-ca');
  const otherCa = await makeCa(work, 'other-ca');
  const caPem = fs.readFileSync(ca.certFile);
  const regLeaf = await issueLeaf(ca, 'registry', { ips: ['127.0.0.1'] });
  const expiredLeaf = await issueLeaf(ca, 'expired', { ips: ['127.0.0.1'], days: 0 });
  const wrongName = await issueLeaf(ca, 'wrongname', { dns: ['harbor.other.example'] });
  const berthLeaf = await issueLeaf(ca, 'berth', { ips: ['127.0.0.1'] });
  const berthLeaf2 = await issueLeaf(ca, 'berth-renewed', { ips: ['127.0.0.1'] });

  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token, tls: regLeaf });
  const img = await makeImage(path.join(work, 'img'), { layers: 2, layerSize: 100_000, seed: 'tls', tag: 'v1' });
  const big = await makeImage(path.join(work, 'big'), { layers: 1, layerSize: 24_000_000, seed: 'tls-big', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/app:v1', { creds: 'pusher:push-secret' });
  await pushImage(big.layoutDir, 'v1', registry, 'library/big:v1', { creds: 'pusher:push-secret' });
  const ctd = await startContainerd(t);
  const expiredReg = await startRegistry(t, { token, tls: expiredLeaf });
  const wrongNameReg = await startRegistry(t, { token, tls: wrongName });

  await t.test('a private-CA upstream trusted through ca_file', async (t) => {
    const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url, ca_file: ca.certFile }] });
    const hostsDir = path.join(work, 'hosts-a');
    await writeHostsToml(hostsDir, 'docker.io', berth.url);
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(r.code, 0, `pull: ${r.stderr}`);
    await ctd.forget();
  });

  const certFile = path.join(work, 'live.crt');
  const keyFile = path.join(work, 'live.key');
  fs.copyFileSync(berthLeaf.certFile, certFile);
  fs.copyFileSync(berthLeaf.keyFile, keyFile);
  const httpsBerth: Berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url, ca_file: ca.certFile }], tls: { certFile, keyFile } });
  await t.test('berth on HTTPS, trusted by containerd through the hosts.toml ca, upstream on TLS too', async (t) => {
    t.match(httpsBerth.url, /^https:/);
    const hostsDir = path.join(work, 'hosts-b');
    const conf = await httpsBerth.cli(['configure', 'containerd', '--hosts-dir', hostsDir, '--ca', ca.certFile]);
    t.equal(conf.code, 0, conf.stderr);
    const written = fs.readFileSync(path.join(hostsDir, 'docker.io', 'hosts.toml'), 'utf8');
    t.match(written, new RegExp(`\\[host\\."${httpsBerth.url.replace(/[.]/g, '\\.')}"\\]`), 'berth named as an HTTPS host');
    t.equal(written.split(`ca = "${ca.certFile}"`).length - 1, 2, "the CA written for berth's host and for the private-CA fallback server");
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(r.code, 0, `pull through HTTPS berth: ${r.stderr}`);
    await ctd.forget();

    await t.test('a certificate swapped on disk: new connections get it, a transfer under way completes', async (t) => {
      const layer = big.manifests[0]!.layers[0]!;
      const before = await peerFingerprint(httpsBerth.port, caPem);
      t.equal(before, new X509Certificate(fs.readFileSync(berthLeaf.certFile)).fingerprint256);
      // Warm the cache, then start a transfer and hold it half-read.
      await getJson(`${httpsBerth.url}/v2/`, caPem);
      const warm = await new Promise<Buffer>((resolve, reject) => {
        https.get(`${httpsBerth.url}/v2/library/big/blobs/${layer}?ns=docker.io`, { ca: caPem }, (res) => {
          const c: Buffer[] = [];
          res.on('data', (d: Buffer) => c.push(d));
          res.on('end', () => resolve(Buffer.concat(c)));
        }).on('error', reject);
      });
      t.equal(sha(warm), layer);
      const chunks: Buffer[] = [];
      const slow = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
        https.get(`${httpsBerth.url}/v2/library/big/blobs/${layer}?ns=docker.io`, { ca: caPem, agent: new https.Agent({ ca: caPem }) }, resolve).on('error', reject);
      });
      slow.pause();
      fs.copyFileSync(berthLeaf2.keyFile, keyFile);
      fs.copyFileSync(berthLeaf2.certFile, certFile);
      await httpsBerth.service.waitForOutput(/TLS certificate reloaded/, 15_000);
      const after = await peerFingerprint(httpsBerth.port, caPem);
      t.equal(after, new X509Certificate(fs.readFileSync(berthLeaf2.certFile)).fingerprint256, 'a new connection gets the new certificate');
      slow.on('data', (d: Buffer) => chunks.push(d));
      slow.resume();
      await new Promise((res) => slow.on('end', res));
      t.equal(sha(Buffer.concat(chunks)), layer, 'the transfer that started before the swap completed with the right bytes');
    });
  });

  const failures: { name: string; upstream: { url: string; ca: string }; reason: RegExp }[] = [];
  failures.push({ name: 'wrong CA', upstream: { url: registry.url, ca: otherCa.certFile }, reason: /verify|self.signed|issuer|certificate/i });
  failures.push({ name: 'expired certificate', upstream: { url: expiredReg.url, ca: ca.certFile }, reason: /expired/i });
  failures.push({ name: 'name mismatch', upstream: { url: wrongNameReg.url, ca: ca.certFile }, reason: /altname|does not match|IP: 127\.0\.0\.1 is not in the cert/i });
  // The expired certificate's notAfter is the second it was issued.
  await waitFor('the expired certificate to be past its notAfter', () => Date.now() > Date.parse(new X509Certificate(fs.readFileSync(expiredLeaf.certFile)).validTo) + 1000, { timeoutMs: 5000, intervalMs: 100 });

  for (const f of failures) {
    await t.test(`${f.name}: a fast 503 with the reason, and a log line naming the certificate`, async (t) => {
      const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: f.upstream.url, ca_file: f.upstream.ca, connect_timeout: '2s', header_timeout: '5s' }] });
      const started = Date.now();
      const res = await fetch(`${berth.url}/v2/library/app/manifests/v1?ns=docker.io`);
      const took = Date.now() - started;
      const body = (await res.json()) as { errors: { code: string; detail?: { reason?: string } }[] };
      t.equal(res.status, 503);
      t.equal(body.errors[0]!.code, 'UNAVAILABLE');
      t.match(body.errors[0]!.detail?.reason ?? '', f.reason, `detail names the problem: ${body.errors[0]!.detail?.reason}`);
      t.ok(took < 8000, `answered within the timeouts (${took} ms)`);
      await berth.service.waitForOutput(/TLS to the upstream failed/, 10_000);
      const line = berth.logs().find((l) => l.msg === 'TLS to the upstream failed') as { certificate?: { subject?: string; validTo?: string } } | undefined;
      t.match(line?.certificate?.subject ?? '', /CN=/, 'the log names the certificate subject');
      t.ok(line?.certificate?.validTo, 'and its expiry');
    });
  }

  await t.test('doctor names expiring, unknown-CA and wrong-name certificates, and skip_verify in hosts.toml', async (t) => {
    const soon = await issueLeaf(ca, 'berth-soon', { ips: ['127.0.0.1'], days: 7 });
    const hostsDir = path.join(work, 'hosts-doctor');
    await writeHostsToml(hostsDir, 'docker.io', httpsBerth.url, { skipVerify: true });
    const ctdConfig = path.join(work, 'containerd-doctor.toml');
    fs.writeFileSync(ctdConfig, `version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "${hostsDir}"\n`);
    const cfg = path.join(work, 'doctor.toml');
    fs.writeFileSync(cfg, [
      '[server]', `listen = "127.0.0.1:${httpsBerth.port}"`, `tls_cert_file = "${soon.certFile}"`, `tls_key_file = "${soon.keyFile}"`,
      '[cache]', `dir = "${path.join(work, 'doctor-cache')}"`,
      '[[upstream]]', 'registry = "docker.io"', `url = "${registry.url}"`, `ca_file = "${otherCa.certFile}"`, 'connect_timeout = "2s"',
      '[[upstream]]', 'registry = "expired.test"', `url = "${expiredReg.url}"`, `ca_file = "${ca.certFile}"`, 'connect_timeout = "2s"',
      '[[upstream]]', 'registry = "wrongname.test"', `url = "${wrongNameReg.url}"`, `ca_file = "${ca.certFile}"`, 'connect_timeout = "2s"',
      '',
    ].join('\n'));
    const { execFile } = await import('node:child_process');
    const r = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(process.execPath, [path.resolve('dist/cli/main.js'), 'doctor', '--config', cfg, '--containerd-config', ctdConfig, '--json'], { timeout: 60_000 }, (e, stdout) => resolve({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, stdout }));
    });
    t.equal(r.code, 1, 'errors found: exit 1');
    const findings = JSON.parse(r.stdout) as { findings?: { level: string; check: string; what: string }[] } | { level: string; check: string; what: string }[];
    const list = Array.isArray(findings) ? findings : findings.findings ?? [];
    const has = (level: string, check: string, re: RegExp) => list.some((f) => f.level === level && f.check === check && re.test(f.what));
    t.ok(has('warn', 'tls.berth', /expires in [1-7] days/), "berth's own certificate expiring within 14 days");
    t.ok(has('error', 'tls.peer', /upstream docker\.io.*not signed by a CA berth trusts/), 'wrong CA');
    t.ok(has('error', 'tls.peer', /upstream expired\.test.*expired/), 'expired certificate');
    t.ok(has('error', 'tls.peer', /upstream wrongname\.test.*does not name 127\.0\.0\.1/), 'name mismatch');
    t.ok(has('warn', 'hosts.skip_verify', /skips TLS verification/), 'skip_verify in hosts.toml');
  });

  await t.test('no private key or password in logs, status or error bodies', async (t) => {
    const keyPem = fs.readFileSync(berthLeaf.keyFile, 'utf8');
    const keyLine = keyPem.split('\n').find((l) => l.length > 40 && !l.startsWith('-----'))!;
    const logs = httpsBerth.service.output();
    t.notOk(logs.includes(keyLine), 'logs');
    t.notOk(logs.includes('PRIVATE KEY'), 'logs never show a PEM key');
    const status = await httpsBerth.cli(['status', '--json']);
    t.notOk(status.stdout.includes(keyLine) || status.stdout.includes('PRIVATE KEY'), 'status');
    const err = await getJson(`${httpsBerth.url}/v2/library/nope/manifests/x?ns=docker.io`, caPem);
    t.notOk(JSON.stringify(err.body).includes('PRIVATE KEY'), 'error bodies');
  });
});
