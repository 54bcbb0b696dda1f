/**
 * When TLS to an upstream fails, the operator needs to know which
 * certificate was offered: its subject, issuer, names and expiry. undici's
 * error only carries the OpenSSL verify code, so berth opens one more
 * connection that does not verify, reads the peer certificate, and logs it
 * (at most once a minute per origin). Nothing is sent on that connection.
 * `berth doctor` uses the same probe, with the upstream's CA bundle, to say
 * why verification would fail.
 */
import tls from 'node:tls';
import type { Logger } from 'pino';

export interface PeerCertificate {
  subject: string;
  issuer: string;
  subjectAltName: string | undefined;
  validFrom: string;
  validTo: string;
  expired: boolean;
  /** Whether the chain and the name verified against `ca` (or the system roots). */
  authorized: boolean;
  /** Node's reason when not: an OpenSSL code, or ERR_TLS_CERT_ALTNAME_INVALID for the name. */
  authorizationError: string | undefined;
  /** The name check on its own (Node folds it into `authorized` only when the chain verified). */
  nameError: string | undefined;
}

/** Connects without verifying and reports the offered certificate; null when no TLS answer came. */
export function probePeerCertificate(url: URL, opts: { timeoutMs?: number; ca?: string[] } = {}): Promise<PeerCertificate | null> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  return new Promise((resolve) => {
    const port = Number(url.port || 443);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    // SNI carries host names only, never IP addresses.
    const servername = /^[\d.]+$|:/.test(host) ? undefined : host;
    const socket = tls.connect({ host, port, ...(servername ? { servername } : {}), ...(opts.ca ? { ca: opts.ca } : {}), rejectUnauthorized: false, timeout: timeoutMs });
    const done = (v: PeerCertificate | null) => {
      socket.destroy();
      resolve(v);
    };
    socket.once('secureConnect', () => {
      const c = socket.getPeerCertificate();
      if (!c || Object.keys(c).length === 0) return done(null);
      const flat = (o: object | undefined) => (o ? Object.entries(o).map(([k, v]) => `${k}=${String(v)}`).join(', ') : '');
      done({
        subject: flat(c.subject),
        issuer: flat(c.issuer),
        subjectAltName: c.subjectaltname,
        validFrom: c.valid_from,
        validTo: c.valid_to,
        expired: Date.parse(c.valid_to) < Date.now(),
        authorized: socket.authorized,
        authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
        nameError: tls.checkServerIdentity(host, c)?.message,
      });
    });
    socket.once('timeout', () => done(null));
    socket.once('error', () => done(null));
  });
}

const lastReport = new Map<string, number>();

export function reportTlsFailure(url: URL, reason: string, logger: Logger, now = Date.now()): void {
  const key = url.origin;
  if ((lastReport.get(key) ?? 0) > now - 60_000) return;
  lastReport.set(key, now);
  void probePeerCertificate(url).then((peer) => {
    // What was offered; not whether it verifies here (this probe has no ca_file: `reason` says why).
    const certificate = peer && { subject: peer.subject, issuer: peer.issuer, subjectAltName: peer.subjectAltName, validFrom: peer.validFrom, validTo: peer.validTo, expired: peer.expired };
    logger.error({ upstreamUrl: url.origin, reason, certificate }, 'TLS to the upstream failed');
  });
}
