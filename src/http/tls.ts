/**
 * The HTTPS listener's certificate, reloaded without a restart: cert-manager
 * or a renewal timer replaces the files, berth notices (a poll of their
 * mtimes and sizes: fs.watch misses the rename-into-place most tools do),
 * checks that the new pair loads, and hands it to the server with
 * setSecureContext. New connections get the new certificate; connections in
 * flight keep the one they started with. A pair that does not load is
 * refused with a log line and the old one stays.
 */
import fs from 'node:fs';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export function loadPair(files: TlsFiles): { cert: Buffer; key: Buffer } {
  const cert = fs.readFileSync(files.certFile);
  const key = fs.readFileSync(files.keyFile);
  // Throws on a key that does not match, or garbage: checked before it goes live.
  tls.createSecureContext({ cert, key });
  return { cert, key };
}

/** Subject, SANs and expiry for log lines: never the key. */
export function describeCert(pem: Buffer | string): { subject: string; san: string | undefined; validTo: string; fingerprint256: string } {
  const x = new X509Certificate(pem);
  return { subject: x.subject.replace(/\n/g, ', '), san: x.subjectAltName, validTo: x.validTo, fingerprint256: x.fingerprint256 };
}

function stamp(files: TlsFiles): string {
  const parts = [files.certFile, files.keyFile].map((f) => {
    try {
      const st = fs.statSync(f);
      return `${st.mtimeMs}:${st.size}:${st.ino}`;
    } catch {
      return 'missing';
    }
  });
  return parts.join('|');
}

export function watchCertificate(
  server: { setSecureContext(options: tls.SecureContextOptions): void },
  files: TlsFiles,
  logger: Logger,
  intervalMs = 2000,
): { stop(): void; check(): boolean } {
  let last = stamp(files);
  const check = (): boolean => {
    const now = stamp(files);
    if (now === last) return false;
    try {
      const pair = loadPair(files);
      server.setSecureContext(pair);
      last = now;
      logger.info({ certificate: describeCert(pair.cert) }, 'TLS certificate reloaded');
      return true;
    } catch (err) {
      // Half-written files (cert replaced, key not yet) land here: retry on the next tick.
      logger.error({ certFile: files.certFile, err: err instanceof Error ? err.message : String(err) }, 'new TLS certificate does not load; keeping the current one');
      return false;
    }
  };
  const timer = setInterval(check, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer), check };
}
