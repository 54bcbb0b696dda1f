/**
 * What each member answers to the request the daemon would send: a signed GET /v2/ on its peer
 * listener. 200 means it is up and holds this node's site key; 401 means another key, or a clock
 * beyond clock_window; its Date header says how far its clock is from ours. An unsigned GET /v2/
 * must be refused (401): something that answers it is a registry, not a peer listener.
 */
import type { PeersConfig } from '../../config/types.js';
import { signPeerRequest } from '../../peers/auth.js';
import { createDispatcher, type UpstreamDispatcher } from '../../upstream/dispatcher.js';

export interface PeerProbe {
  peer: string;
  /** It answered HTTP at all. */
  reachable: boolean;
  /** It accepted this node's signature (200 to a signed GET /v2/) and refused an unsigned request: a peer of this site. */
  signed: boolean;
  /** The HTTP status of the signed GET /v2/ (of the unsigned one when there is no key to sign with). */
  status?: number;
  /** Its clock minus ours, from its Date header: whole seconds on the wire, so ±1 s. */
  skewMs?: number;
  error?: string;
  /** What is wrong, for doctor's fix; absent when signed. */
  problem?: 'unreachable' | 'tls' | 'key' | 'clock' | 'no-key' | 'not-a-peer';
}

export interface ProbeOptions {
  scheme: 'http' | 'https';
  caFile?: string;
  /** The site key, or why it cannot be read (then only reachability is probed). */
  key: Buffer | { error: string };
  /** Connect and answer, per request. */
  timeoutMs: number;
  /** [peers] clock_window: a skew past it explains a 401. */
  clockWindowMs: number;
}

/** Why a request (or a look-up) failed, in the socket's own words. */
export function reason(err: unknown): string {
  const e = err as { cause?: { code?: string; message?: string }; code?: string; message?: string };
  // UND_ERR_* codes say less than the socket's own ("ECONNREFUSED", a certificate verdict).
  return e.cause?.code ?? e.cause?.message ?? (e.code && !e.code.startsWith('UND_ERR_') ? e.code : undefined) ?? e.message ?? String(err);
}

const TLS_CODE = /CERT|SELF_SIGNED|ISSUER|SIGNATURE|ALTNAME|TLS|SSL|EPROTO/;

/** "3 s ahead of ours" / "2 s behind ours". */
export function describeSkew(skewMs: number): string {
  const s = Math.round(Math.abs(skewMs) / 1000);
  return s === 0 ? 'within 1 s of ours' : `${s} s ${skewMs > 0 ? 'ahead of' : 'behind'} ours`;
}

interface Answer {
  status: number;
  skewMs?: number;
}

async function get(transport: UpstreamDispatcher, url: string, headers: Record<string, string>, timeoutMs: number): Promise<Answer> {
  const started = Date.now();
  const u = new URL(url);
  const res = await transport.dispatcher.request({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers, signal: AbortSignal.timeout(timeoutMs) });
  const arrived = Date.now();
  await res.body.dump();
  const header = res.headers.date;
  const date = Date.parse((Array.isArray(header) ? header[0] : header) ?? '');
  // Date is truncated to the second: the peer's clock read somewhere in [date, date + 1 s).
  return Number.isNaN(date) ? { status: res.statusCode } : { status: res.statusCode, skewMs: date + 500 - (started + arrived) / 2 };
}

async function probeOne(peer: string, transport: UpstreamDispatcher, opts: ProbeOptions): Promise<PeerProbe> {
  const url = `${opts.scheme}://${peer}/v2/`;
  const key = Buffer.isBuffer(opts.key) ? opts.key : null;
  let signed: Answer;
  try {
    signed = await get(transport, url, key ? signPeerRequest(key, { method: 'GET', path: '/v2/', now: Date.now() }) : {}, opts.timeoutMs);
  } catch (err) {
    const why = reason(err);
    const tls = TLS_CODE.test(why);
    return { peer, reachable: false, signed: false, error: tls ? `TLS failed (${why})` : `unreachable (${why})`, problem: tls ? 'tls' : 'unreachable' };
  }
  const base = { peer, reachable: true, status: signed.status, ...(signed.skewMs !== undefined ? { skewMs: Math.round(signed.skewMs) } : {}) };
  if (!key) {
    const why = (opts.key as { error: string }).error;
    return signed.status === 401
      ? { ...base, signed: false, error: `answers (401 to an unsigned request), but this user cannot sign: ${why}`, problem: 'no-key' }
      : { ...base, signed: false, error: `answers an unsigned GET /v2/ with ${signed.status}: not a berth peer listener (and this user cannot sign: ${why})`, problem: 'not-a-peer' };
  }
  if (signed.status === 401) {
    const clock = signed.skewMs !== undefined && Math.abs(signed.skewMs) > opts.clockWindowMs - 1000;
    return clock
      ? { ...base, signed: false, error: `refuses this node's signature (401): its clock is ${describeSkew(signed.skewMs!)}, beyond clock_window (±${opts.clockWindowMs / 1000} s)`, problem: 'clock' }
      : { ...base, signed: false, error: 'refuses this node\'s signature (401): it holds another site key', problem: 'key' };
  }
  if (signed.status !== 200) return { ...base, signed: false, error: `answers a signed GET /v2/ with ${signed.status}: not a berth peer listener`, problem: 'not-a-peer' };
  // A registry that answers everyone would pass the signed check too.
  try {
    const unsigned = await get(transport, url, {}, opts.timeoutMs);
    if (unsigned.status !== 401) return { ...base, signed: false, error: `answers GET /v2/ without a signature (${unsigned.status}): a registry, not a berth peer listener`, problem: 'not-a-peer' };
  } catch (err) {
    return { ...base, reachable: false, signed: false, error: `unreachable on the second request (${reason(err)})`, problem: 'unreachable' };
  }
  return { ...base, signed: true };
}

/** Probes each peer, all at once; never throws. */
export async function probePeers(peers: readonly string[], opts: ProbeOptions): Promise<PeerProbe[]> {
  if (peers.length === 0) return [];
  let transport: UpstreamDispatcher;
  try {
    transport = createDispatcher({
      registry: 'site peers',
      timeouts: { connectMs: opts.timeoutMs, headersMs: opts.timeoutMs, bodyIdleMs: opts.timeoutMs },
      connections: 2,
      keepAliveTimeoutMs: 1000,
      ...(opts.caFile !== undefined ? { caFile: opts.caFile } : {}),
    });
  } catch (err) {
    return peers.map((peer) => ({ peer, reachable: false, signed: false, error: `cannot set up TLS: ${(err as Error).message}`, problem: 'tls' as const }));
  }
  try {
    return await Promise.all(peers.map((peer) => probeOne(peer, transport, opts)));
  } finally {
    await transport.close().catch(() => undefined);
  }
}

/** The site key as probePeers wants it: the bytes, or why this user cannot have them. */
export function siteKeyOrError(peers: PeersConfig): Buffer | { error: string } {
  try {
    return peers.key.reveal();
  } catch (err) {
    return { error: (err as Error).message };
  }
}
