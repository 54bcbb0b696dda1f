/**
 * Self-signed server certificates for HTTPS peers on loopback (a private-CA
 * Harbor, an HTTPS registry, berth serving TLS). The certificate is its own CA,
 * so `caFile` doubles as the trust anchor for clients (hosts.toml `ca`,
 * berth's `ca_file`, NODE_EXTRA_CA_CERTS).
 */
import path from 'node:path';
import { runOk } from './procs.js';

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** Same file as certFile (self-signed). */
  caFile: string;
}

export async function makeServerCert(
  dir: string,
  opts: { cn?: string; ips?: string[]; dnsNames?: string[]; name?: string } = {},
): Promise<TlsFiles> {
  const name = opts.name ?? 'server';
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  const ips = opts.ips ?? ['127.0.0.1'];
  const dns = opts.dnsNames ?? ['localhost'];
  const san = [...ips.map((i) => `IP:${i}`), ...dns.map((d) => `DNS:${d}`)].join(',');
  await runOk('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-subj', `/CN=${opts.cn ?? 'berth-test-server'}`,
    '-addext', `subjectAltName=${san}`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-keyout', keyFile, '-out', certFile,
  ]);
  return { certFile, keyFile, caFile: certFile };
}
