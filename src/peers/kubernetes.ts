/**
 * Site membership from Kubernetes: the ready endpoints of the peers' headless Service, read from
 * its EndpointSlices (discovery.k8s.io/v1) with the pod's service account and kept current by a
 * watch, the way client-go's reflector does it:
 *
 *   LIST  .../endpointslices?labelSelector=kubernetes.io/service-name=<service>   -> items + rv
 *   WATCH  same ?watch=1&resourceVersion=<rv>&allowWatchBookmarks=true            -> NDJSON events
 *     ADDED/MODIFIED/DELETED: update that slice, rv = the object's rv
 *     BOOKMARK: rv only (no object changed, but a reconnect can start later)
 *     ERROR (a Status; 410 Gone: rv too old): LIST again
 *     the stream ends or breaks: WATCH again from the last rv, after a backoff
 *
 * The members are the union of every slice of the Service. A small watch on undici (already
 * loaded for the upstreams) instead of @kubernetes/client-node: docs/peers-kubernetes-client.md
 * has the measurements.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { Agent, Dispatcher } from 'undici';
import { loadUndici } from '../upstream/dispatcher.js';
import { errorCode } from '../upstream/errors.js';
import { MemberSet, parseMember, type Membership } from './membership.js';

/** Where kubelet mounts the pod's service account (token, ca.crt, namespace). */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubernetesMembershipOptions {
  namespace: string;
  /** The headless Service whose endpoints are the site's berths. */
  service: string;
  /** The name of the Service port peers listen on ("peer"). */
  port: string;
  /** This node's `[peers] listen` host:port, left out of the members. */
  self: string;
  log: Logger;
  /** Default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT. */
  apiServer?: string;
  /** Defaults: the service account's token and ca.crt. */
  tokenFile?: string;
  caFile?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * A token read longer ago than this is read again. Bound service account tokens expire
   * (an hour by default) and kubelet rewrites the file before they do; client-go re-reads
   * every minute. Default 60 s.
   */
  tokenMaxAgeMs?: number;
  /** Delay before a re-watch or re-list, doubled on each failure in a row. Default 1 s to 30 s. */
  backoff?: { initialMs: number; maxMs: number };
  /** The API server ends each watch after this; default a random 5 to 10 min, as client-go. */
  watchTimeoutSeconds?: number;
  /** Connect and response-headers timeout, and the whole list. Default 10 s. */
  requestTimeoutMs?: number;
}

export type KubernetesErrorCode = 'K8S_CONFIG' | 'K8S_UNAUTHORIZED' | 'K8S_FORBIDDEN' | 'K8S_UNREACHABLE' | 'K8S_GONE' | 'K8S_STATUS' | 'K8S_PROTOCOL';

export class KubernetesError extends Error {
  readonly code: KubernetesErrorCode;
  readonly status: number | undefined;
  constructor(code: KubernetesErrorCode, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'KubernetesError';
    this.code = code;
    this.status = opts.status;
  }
}

/** The parts of discovery.k8s.io/v1 read here; everything may be absent on the wire. */
interface ObjectMeta {
  name?: string;
  resourceVersion?: string;
}
interface EndpointSlice {
  metadata?: ObjectMeta;
  addressType?: string;
  endpoints?: Array<{ addresses?: string[]; conditions?: { ready?: boolean | null; terminating?: boolean | null } }> | null;
  ports?: Array<{ name?: string; port?: number; protocol?: string }> | null;
}
interface Status {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
}

const API_PATH = '/apis/discovery.k8s.io/v1';
/** A watch line larger than this is not an EndpointSlice (the API server caps objects at 1.5 MiB). */
const MAX_LINE = 4 * 1024 * 1024;

/**
 * The member ids (parseMember's normal form) of every endpoint of one slice that should get
 * traffic. discovery.k8s.io/v1:
 * `ready` absent means ready; `terminating` absent means not terminating, and a terminating
 * endpoint is left out even when ready (a Service with publishNotReadyAddresses keeps it ready).
 * The port is the slice's port of that name; FQDN slices name no address to dial.
 */
export function sliceMembers(slice: EndpointSlice, portName: string): string[] {
  const family = slice.addressType === 'IPv4' ? 4 : slice.addressType === 'IPv6' ? 6 : 0;
  if (family === 0) return [];
  const port = (slice.ports ?? []).find((p) => p.name === portName && (p.protocol ?? 'TCP') === 'TCP')?.port;
  if (port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) return [];
  const out: string[] = [];
  for (const ep of slice.endpoints ?? []) {
    if (ep.conditions?.ready === false || ep.conditions?.terminating === true) continue;
    for (const addr of ep.addresses ?? []) {
      if (isIP(addr) !== family) continue;
      try {
        out.push(parseMember(family === 6 ? `[${addr}]:${port}` : `${addr}:${port}`).id);
      } catch {
        // The any-address, or a zone index: nothing another node can dial.
      }
    }
  }
  return out;
}

function reason(err: unknown): string {
  return errorCode(err) ?? (err instanceof Error ? err.message : String(err));
}

/** OpenSSL's verdicts on a certificate, as Node puts them in `err.code`. */
function isCertificateError(err: unknown): boolean {
  const code = errorCode(err) ?? '';
  return /CERT|SIGNATURE|ISSUER|SELF_SIGNED|ALTNAME/.test(code);
}

class KubernetesMembership implements Membership {
  readonly self: string;
  readonly #o: KubernetesMembershipOptions;
  readonly #log: Logger;
  readonly #set = new MemberSet();
  /** Slice name -> the members it names. */
  #slices = new Map<string, string[]>();
  #rv = '';
  #server = '';
  #tokenFile: string;
  #caFile: string;
  #token: { value: string; readAt: number } | undefined;
  #agent: Agent | undefined;
  #started = false;
  #stopped = false;
  #inflight: AbortController | undefined;
  #wake: (() => void) | undefined;
  #running: Promise<void> | undefined;
  #noPortWarned = new Set<string>();

  constructor(opts: KubernetesMembershipOptions) {
    this.#o = opts;
    this.self = parseMember(opts.self).id;
    this.#log = opts.log.child({ peers: 'kubernetes', namespace: opts.namespace, service: opts.service });
    this.#tokenFile = opts.tokenFile ?? `${SERVICE_ACCOUNT_DIR}/token`;
    this.#caFile = opts.caFile ?? `${SERVICE_ACCOUNT_DIR}/ca.crt`;
  }

  members(): readonly string[] {
    return this.#set.get();
  }

  onChange(fn: (members: readonly string[]) => void): () => void {
    return this.#set.onChange(fn);
  }

  async start(): Promise<void> {
    if (this.#started) throw new Error('kubernetes membership: start() called twice');
    this.#started = true;
    this.#server = this.#apiServer();
    let ca: string;
    try {
      ca = await readFile(this.#caFile, 'utf8');
    } catch (err) {
      throw new KubernetesError('K8S_CONFIG', `peers.kubernetes: cannot read the cluster CA ${this.#caFile} (${reason(err)})`, { cause: err });
    }
    const timeout = this.#o.requestTimeoutMs ?? 10_000;
    // Only the cluster CA: the API server's certificate is never signed by a public root.
    const { Agent } = await loadUndici();
    this.#agent = new Agent({ connections: 2, connect: { ca, timeout }, headersTimeout: timeout });
    try {
      await this.#list();
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.#log.info({ members: this.#set.get().length, resourceVersion: this.#rv }, 'peers: listed the EndpointSlices');
    this.#running = this.#run();
  }

  /** Ends the watch and any backoff; resolves once no request is open any more. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#inflight?.abort();
      this.#wake?.();
    }
    await this.#running;
    await this.#agent?.destroy().catch(() => undefined);
  }

  #apiServer(): string {
    if (this.#o.apiServer) return this.#o.apiServer.replace(/\/+$/, '');
    const env = this.#o.env ?? process.env;
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT;
    if (!host || !port) {
      throw new KubernetesError('K8S_CONFIG', 'peers.kubernetes needs the in-cluster API, but KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set (is berth running in a pod?)');
    }
    return `https://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
  }

  /** List, then watch until stopped; every failure waits a growing backoff and starts again. */
  async #run(): Promise<void> {
    const { initialMs, maxMs } = this.#o.backoff ?? { initialMs: 1000, maxMs: 30_000 };
    let delay = initialMs;
    let relist = false;
    while (!this.#stopped) {
      let healthy = false;
      try {
        if (relist) {
          await this.#list();
          relist = false;
          this.#log.info({ members: this.#set.get().length, resourceVersion: this.#rv }, 'peers: listed the EndpointSlices again');
        }
        const end = await this.#watch(() => (healthy = true));
        // The server ended the watch (its timeoutSeconds, or an ERROR event): nothing failed.
        healthy = true;
        if (end === 'relist') relist = true;
        else this.#log.debug({ resourceVersion: this.#rv }, 'peers: watch closed, watching again');
      } catch (err) {
        if (this.#stopped) return;
        if (err instanceof KubernetesError && err.code === 'K8S_GONE') relist = true;
        else if (err instanceof KubernetesError && err.code === 'K8S_UNAUTHORIZED') this.#token = undefined;
        this.#log.warn({ err: err instanceof Error ? err.message : String(err), retryInMs: delay }, 'peers: EndpointSlice watch failed');
      }
      // A watch that delivered events or ended cleanly was healthy: start the backoff over.
      if (healthy) delay = initialMs;
      await this.#pause(delay);
      if (!healthy) delay = Math.min(delay * 2, maxMs);
    }
  }

  #pause(ms: number): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, ms * (0.8 + Math.random() * 0.4));
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  #path(query: Record<string, string>): string {
    const q = new URLSearchParams({ labelSelector: `kubernetes.io/service-name=${this.#o.service}`, ...query });
    return `${API_PATH}/namespaces/${encodeURIComponent(this.#o.namespace)}/endpointslices?${q}`;
  }

  async #bearer(): Promise<string> {
    const maxAge = this.#o.tokenMaxAgeMs ?? 60_000;
    if (this.#token === undefined || Date.now() - this.#token.readAt >= maxAge) {
      let value: string;
      try {
        value = (await readFile(this.#tokenFile, 'utf8')).trim();
      } catch (err) {
        throw new KubernetesError('K8S_CONFIG', `peers.kubernetes: cannot read the service account token ${this.#tokenFile} (${reason(err)}); is automountServiceAccountToken off?`, { cause: err });
      }
      this.#token = { value, readAt: Date.now() };
    }
    return this.#token.value;
  }

  async #get(path: string, bodyTimeout: number): Promise<{ res: Dispatcher.ResponseData; abort: AbortController }> {
    const agent = this.#agent;
    if (!agent || this.#stopped) throw new KubernetesError('K8S_CONFIG', 'peers.kubernetes: stopped');
    const abort = new AbortController();
    this.#inflight = abort;
    const headers = { authorization: `Bearer ${await this.#bearer()}`, accept: 'application/json' };
    let res: Dispatcher.ResponseData;
    try {
      res = await agent.request({ origin: this.#server, path, method: 'GET', headers, signal: abort.signal, bodyTimeout });
    } catch (err) {
      const hint = isCertificateError(err) ? `; the API server's certificate is not signed by ${this.#caFile}` : '';
      throw new KubernetesError('K8S_UNREACHABLE', `cannot reach the Kubernetes API at ${this.#server} (${reason(err)}${hint})`, { cause: err });
    }
    if (res.statusCode !== 200) throw await this.#statusError(res);
    return { res, abort };
  }

  async #statusError(res: Dispatcher.ResponseData): Promise<KubernetesError> {
    const text = await res.body.text().catch(() => '');
    let status: Status = {};
    try {
      status = JSON.parse(text) as Status;
    } catch {
      // Not a Status object (a proxy in the way): the HTTP status says enough.
    }
    const said = status.message ? `: ${status.message}` : '';
    const where = `${this.#server} (namespace ${this.#o.namespace})`;
    switch (res.statusCode) {
      case 401:
        return new KubernetesError('K8S_UNAUTHORIZED', `the Kubernetes API at ${this.#server} refused the service account token from ${this.#tokenFile} (401 Unauthorized${said})`, { status: 401 });
      case 403:
        return new KubernetesError(
          'K8S_FORBIDDEN',
          `the service account may not list/watch EndpointSlices at ${where} (403 Forbidden${said}); the DaemonSet's Role needs get, list and watch on discovery.k8s.io endpointslices`,
          { status: 403 },
        );
      case 410:
        return new KubernetesError('K8S_GONE', `resourceVersion ${this.#rv} expired (410 Gone${said})`, { status: 410 });
      default:
        return new KubernetesError('K8S_STATUS', `the Kubernetes API at ${where} answered ${res.statusCode}${said}`, { status: res.statusCode });
    }
  }

  async #list(): Promise<void> {
    const { res } = await this.#get(this.#path({}), this.#o.requestTimeoutMs ?? 10_000);
    let list: { kind?: string; metadata?: ObjectMeta; items?: EndpointSlice[] };
    try {
      list = (await res.body.json()) as typeof list;
    } catch (err) {
      throw new KubernetesError('K8S_PROTOCOL', `the Kubernetes API at ${this.#server} sent an EndpointSlice list that is not JSON (${reason(err)})`, { cause: err });
    }
    const rv = list.metadata?.resourceVersion;
    if (list.kind !== 'EndpointSliceList' || !Array.isArray(list.items) || typeof rv !== 'string') {
      throw new KubernetesError('K8S_PROTOCOL', `the Kubernetes API at ${this.#server} sent ${String(list.kind)} where an EndpointSliceList with a resourceVersion belongs`);
    }
    this.#slices = new Map();
    for (const slice of list.items) this.#put(slice);
    this.#rv = rv;
    this.#publish();
  }

  /**
   * One watch, until the server ends it ('closed') or sends an ERROR event ('relist').
   * `progressed` is called on each event, bookmarks included.
   */
  async #watch(progressed: () => void): Promise<'closed' | 'relist'> {
    const timeoutS = this.#o.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    const path = this.#path({ watch: '1', resourceVersion: this.#rv, allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutS) });
    // A silent connection longer than the server's own timeout is a dead one (a half-open TCP).
    const { res, abort } = await this.#get(path, (timeoutS + 30) * 1000);
    res.body.setEncoding('utf8');
    let buf = '';
    try {
      for await (const chunk of res.body as AsyncIterable<string>) {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === '') continue;
          progressed();
          if (this.#event(line) === 'relist') return 'relist';
        }
        if (buf.length > MAX_LINE) throw new KubernetesError('K8S_PROTOCOL', `a watch event from ${this.#server} is over ${MAX_LINE} bytes`);
      }
    } catch (err) {
      if (err instanceof KubernetesError) throw err;
      throw new KubernetesError('K8S_UNREACHABLE', `the EndpointSlice watch on ${this.#server} broke (${reason(err)})`, { cause: err });
    } finally {
      abort.abort();
    }
    return 'closed';
  }

  #event(line: string): 'relist' | undefined {
    let ev: { type?: string; object?: EndpointSlice & Status };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch {
      throw new KubernetesError('K8S_PROTOCOL', `a watch event from ${this.#server} is not JSON`);
    }
    const obj = ev.object ?? {};
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED':
        this.#put(obj);
        break;
      case 'DELETED':
        if (obj.metadata?.name !== undefined) this.#slices.delete(obj.metadata.name);
        break;
      case 'BOOKMARK':
        break;
      case 'ERROR':
        // The stream promises nothing after an error. 410 Gone is the usual one: the resourceVersion
        // was compacted away, and only a new list can say what changed meanwhile.
        this.#log.info({ code: obj.code, reason: obj.reason, message: obj.message, resourceVersion: this.#rv }, 'peers: the EndpointSlice watch ended with an error, listing again');
        return 'relist';
      default:
        throw new KubernetesError('K8S_PROTOCOL', `unknown watch event type ${String(ev.type)} from ${this.#server}`);
    }
    const rv = obj.metadata?.resourceVersion;
    if (typeof rv === 'string' && rv !== '') this.#rv = rv;
    if (ev.type !== 'BOOKMARK') this.#publish();
    return undefined;
  }

  #put(slice: EndpointSlice): void {
    const name = slice.metadata?.name;
    if (name === undefined) return;
    const hasPort = (slice.ports ?? []).some((p) => p.name === this.#o.port);
    if (!hasPort && (slice.endpoints?.length ?? 0) > 0 && !this.#noPortWarned.has(name)) {
      this.#noPortWarned.add(name);
      this.#log.warn({ slice: name, ports: (slice.ports ?? []).map((p) => p.name ?? '') }, `peers: EndpointSlice has no port named "${this.#o.port}"; its endpoints are not peers`);
    }
    this.#slices.set(name, sliceMembers(slice, this.#o.port));
  }

  #publish(): void {
    const all = new Set<string>();
    for (const members of this.#slices.values()) for (const m of members) if (m !== this.self) all.add(m);
    const next = [...all].sort();
    if (this.#set.replace(Object.freeze(next)) === undefined) return;
    this.#log.info({ members: next }, 'peers: members changed');
    this.#set.notify((err) => this.#log.error({ err }, 'peers: a membership listener threw'));
  }
}

export function kubernetesMembership(opts: KubernetesMembershipOptions): Membership {
  return new KubernetesMembership(opts);
}
