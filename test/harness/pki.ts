/**
 * A small PKI for TLS tests, made with openssl: a CA and leaf certificates
 * it signs, with chosen names, including an already-expired one.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runOk } from './procs.js';

export interface Ca {
  certFile: string;
  keyFile: string;
  dir: string;
}

export interface Leaf {
  certFile: string;
  keyFile: string;
}

export async function makeCa(dir: string, name = 'berth-test-ca'): Promise<Ca> {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  await runOk('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', `/CN=${name}`, '-days', '3', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return { certFile, keyFile, dir };
}

/**
 * A leaf signed by `ca` for the given SANs. `days: 0` makes a certificate
 * whose notAfter is the moment it was issued: expired a second later.
 */
export async function issueLeaf(ca: Ca, name: string, o: { ips?: string[]; dns?: string[]; days?: number } = {}): Promise<Leaf> {
  const base = path.join(ca.dir, name);
  const keyFile = `${base}.key`;
  const csr = `${base}.csr`;
  const certFile = `${base}.crt`;
  const ext = `${base}.ext`;
  const sans = [...(o.ips ?? []).map((i) => `IP:${i}`), ...(o.dns ?? []).map((d) => `DNS:${d}`)];
  await writeFile(ext, `subjectAltName=${sans.join(',')}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  await runOk('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', `/CN=${name}`]);
  await runOk('openssl', ['x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial', '-out', certFile, '-days', String(o.days ?? 2), '-extfile', ext]);
  return { certFile, keyFile };
}
