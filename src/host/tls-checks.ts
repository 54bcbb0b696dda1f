/**
 * `berth doctor`'s TLS findings: berth's own certificate (expired, or
 * expiring within 14 days), each HTTPS upstream's and Harbor's certificate
 * as berth would verify it (unknown CA, name mismatch, expiry), skip_verify
 * left on, a containerd hosts.toml that skips verification where a `ca`
 * would do, and the node's clock against Harbor's (CVE allowlist expiry and
 * offline_grace are judged by the node's clock).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { Config } from '../config/types.js';
import { finding, type Finding } from './findings.js';
import { parseHostsToml } from './hosts-toml.js';
import { createDispatcher, type UpstreamDispatcher } from '../upstream/dispatcher.js';
import { probePeerCertificate } from '../upstream/tls-probe.js';

const SOON_MS = 14 * 86_400_000;
const DAY = 86_400_000;

function expiryFinding(check: string, what: string, validTo: string, now: number, fix: string): Finding {
  const end = Date.parse(validTo);
  if (end <= now) return finding('error', check, `${what}: certificate expired on ${validTo}`, fix);
  if (end - now < SOON_MS) return finding('warn', check, `${what}: certificate expires in ${Math.ceil((end - now) / DAY)} days (${validTo})`, fix);
  return finding('ok', check, `${what}: certificate valid until ${validTo}`);
}

export async function ownCertificateFinding(config: Config, now = Date.now()): Promise<Finding[]> {
  const file = config.server.tlsCertFile;
  if (!file) return [];
  try {
    const x = new X509Certificate(await fs.readFile(file));
    return [expiryFinding('tls.berth', `berth's certificate ${file} (${x.subject.replace(/\n/g, ', ')})`, x.validTo, now, 'renew it; berth picks up the new files without a restart')];
  } catch (e) {
    return [finding('error', 'tls.berth', `berth's certificate ${file} cannot be read (${(e as Error).message})`, 'fix [server] tls_cert_file')];
  }
}

export async function peerCertificateFindings(config: Config, timeoutMs: number, now = Date.now()): Promise<Finding[]> {
  const targets: { name: string; url: string; caFile: string | undefined; skipVerify: boolean; key: string }[] = config.upstreams.map((u) => ({ name: `upstream ${u.registry}`, url: u.url, caFile: u.caFile, skipVerify: u.skipVerify, key: 'upstream[].ca_file' }));
  if (config.harbor) targets.push({ name: 'Harbor', url: config.harbor.url, caFile: config.harbor.caFile, skipVerify: config.harbor.skipVerify, key: '[harbor] ca_file' });
  const out: Finding[] = [];
  for (const t of targets) {
    const url = new URL(t.url);
    if (url.protocol !== 'https:') continue;
    if (t.skipVerify) out.push(finding('warn', 'tls.skip_verify', `${t.name} (${t.url}): skip_verify is on, so berth cannot tell Harbor from an impostor`, `set ${t.key} to the CA that signed its certificate and turn skip_verify off`));
    // As berth would verify: the system roots plus the ca_file.
    const ca = t.caFile ? [...tls.rootCertificates, await fs.readFile(t.caFile, 'utf8')] : undefined;
    const peer = await probePeerCertificate(url, { timeoutMs, ...(ca ? { ca } : {}) });
    // No TLS answer: reachability has its own finding; say nothing twice.
    if (!peer) continue;
    // Node folds the name check into `authorized` too: tell the two apart.
    const nameProblem = peer.nameError ?? (peer.authorizationError === 'ERR_TLS_CERT_ALTNAME_INVALID' ? 'the name is not in its subjectAltName' : undefined);
    if (!peer.authorized && !t.skipVerify && peer.authorizationError !== 'ERR_TLS_CERT_ALTNAME_INVALID') {
      const reason = peer.authorizationError ?? 'not trusted';
      if (reason === 'CERT_HAS_EXPIRED') out.push(finding('error', 'tls.peer', `${t.name}: its certificate (${peer.subject}) expired on ${peer.validTo}`, 'renew the certificate on that server'));
      else out.push(finding('error', 'tls.peer', `${t.name}: its certificate (${peer.subject}) is not signed by a CA berth trusts (${reason})`, `set ${t.key} to the CA that signed it${t.caFile ? ` (${t.caFile} is not that CA)` : ''}`));
      continue;
    }
    if (nameProblem && !t.skipVerify) {
      out.push(finding('error', 'tls.peer', `${t.name}: its certificate (${peer.subject}) does not name ${url.hostname}: ${nameProblem}`, `reach it by a name the certificate carries, or reissue the certificate with ${url.hostname} in its subjectAltName`));
      continue;
    }
    out.push(expiryFinding('tls.peer', `${t.name} (${peer.subject})`, peer.validTo, now, 'renew the certificate on that server'));
  }
  return out;
}

/** hosts.toml files that turn verification off where a `ca` would do. */
export async function skipVerifyFindings(dirs: readonly string[]): Promise<Finding[]> {
  const out: Finding[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      const file = path.join(dir, name, 'hosts.toml');
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch {
        continue;
      }
      try {
        const doc = parseHostsToml(text, file);
        const skipped = [...doc.hosts.filter((h) => h.table.skip_verify === true).map((h) => h.url), ...(doc.top.some(([k, v]) => k === 'skip_verify' && v === true) ? [doc.server ?? 'server'] : [])];
        for (const u of skipped) out.push(finding('warn', 'hosts.skip_verify', `${name}: ${file} skips TLS verification for ${u}`, `replace skip_verify = true with ca = "<the CA file>" (berth configure containerd --ca FILE writes it for berth)`));
      } catch {
        // a broken file is reported by the hosts.toml check
      }
    }
  }
  return out;
}

/**
 * The node's clock against Harbor's Date header: policy expiry is judged by
 * this node's clock. Harbor is reached as the sync reaches it (the upstream
 * dispatcher, with [harbor] ca_file and skip_verify), so a private-CA Harbor
 * gets an answer; a Harbor that cannot be reached has its own finding.
 */
export async function clockSkewFinding(config: Config, timeoutMs: number): Promise<Finding[]> {
  const harbor = config.harbor;
  if (!harbor) return [];
  let transport: UpstreamDispatcher | undefined;
  try {
    transport = createDispatcher({
      registry: new URL(harbor.url).host,
      timeouts: { connectMs: timeoutMs, headersMs: timeoutMs, bodyIdleMs: timeoutMs },
      skipVerify: harbor.skipVerify,
      connections: 1,
      keepAliveTimeoutMs: 10,
      ...(harbor.caFile !== undefined ? { caFile: harbor.caFile } : {}),
    });
    const started = Date.now();
    const ping = new URL('/api/v2.0/ping', harbor.url);
    const res = await transport.dispatcher.request({ origin: ping.origin, path: ping.pathname, method: 'GET', signal: AbortSignal.timeout(timeoutMs) });
    const arrived = Date.now();
    await res.body.dump();
    const header = res.headers.date;
    const date = Array.isArray(header) ? header[0] : header;
    if (!date || Number.isNaN(Date.parse(date))) return [];
    const skew = Date.parse(date) - (started + arrived) / 2;
    if (Math.abs(skew) > 60_000) {
      return [finding('warn', 'harbor.clock', `this node's clock is ${Math.round(Math.abs(skew) / 1000)} s ${skew > 0 ? 'behind' : 'ahead of'} Harbor's: CVE allowlist expiry and offline_grace are judged by it`, 'run NTP (systemd-timesyncd or chrony) on the node')];
    }
    return [finding('ok', 'harbor.clock', `clock within ${Math.max(1, Math.round(Math.abs(skew) / 1000))} s of Harbor's`)];
  } catch {
    return [];
  } finally {
    await transport?.close().catch(() => undefined);
  }
}
