/**
 * A small Kubernetes API server for EndpointSlices over HTTPS: bearer-token auth (401 Status),
 * RBAC limited to one namespace (403 Status), list and watch of
 * /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices with a label selector, and the watch
 * protocol as the real server speaks it (newline-delimited JSON events, BOOKMARK when asked for,
 * an ERROR event with a 410 Status for a compacted resourceVersion). A test changes slices
 * through the store, sends bookmarks, ends or breaks watches, and reads what every request asked.
 */
import { EventEmitter, once } from 'node:events';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SERVICE_LABEL, SliceStore, type HistoryEntry, type SliceSpec, type WatchEvent } from './model.js';

export interface SimRequest {
  path: string;
  query: URLSearchParams;
  watch: boolean;
  /** The request's resourceVersion parameter ('' when absent). */
  resourceVersion: string;
  authorization: string | undefined;
  /** The answer's HTTP status. */
  status: number;
}

interface OpenWatch {
  req: SimRequest;
  res: ServerResponse;
  namespace: string;
  service: string | undefined;
  bookmarks: boolean;
}

export interface K8sSimOptions {
  namespace: string;
  service: string;
  token: string;
  certFile: string;
  keyFile: string;
  /** The service account's name, for the 403 text. */
  serviceAccount?: string;
}

const PATH = /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/endpointslices$/;

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

export class K8sSim extends EventEmitter {
  readonly store: SliceStore;
  readonly requests: SimRequest[] = [];
  token: string;
  url = '';
  readonly #o: K8sSimOptions;
  readonly #server: https.Server;
  readonly #watches = new Set<OpenWatch>();

  constructor(o: K8sSimOptions) {
    super();
    this.#o = o;
    this.token = o.token;
    this.store = new SliceStore(o.namespace, o.service);
    this.#server = https.createServer({ cert: readFileSync(o.certFile), key: readFileSync(o.keyFile) }, (req, res) => this.#handle(req, res));
  }

  async listen(): Promise<void> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    this.url = `https://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Open watches right now. */
  watchCount(): number {
    return this.#watches.size;
  }

  /** Resolves with the next watch request (after it was answered). */
  nextWatch(): Promise<SimRequest> {
    return once(this, 'watch').then(([r]) => r as SimRequest);
  }

  /** Resolves with the next list request (after it was answered). */
  nextList(): Promise<SimRequest> {
    return once(this, 'list').then(([r]) => r as SimRequest);
  }

  /** Creates or changes a slice; watchers get ADDED or MODIFIED. */
  put(spec: SliceSpec): void {
    this.#broadcast(this.store.put(spec));
  }

  /** Changes a slice with no event to anyone (an event lost to a watcher that must relist). */
  putSilently(spec: SliceSpec): void {
    this.store.put(spec, true);
  }

  remove(name: string): void {
    this.#broadcast(this.store.delete(name));
  }

  /** Moves the resourceVersion (other objects changed) and sends a BOOKMARK with it; returns it. */
  bookmark(): string {
    const rv = String(this.store.bump());
    for (const w of this.#watches) {
      if (w.bookmarks) this.#send(w, { type: 'BOOKMARK', object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: rv, creationTimestamp: null }, addressType: '', endpoints: null } });
    }
    return rv;
  }

  /** Compacts the history and tells every open watch its resourceVersion is gone (ERROR 410). */
  gone(): void {
    this.store.compact();
    for (const w of [...this.#watches]) {
      this.#send(w, { type: 'ERROR', object: this.#expired(Number(w.req.resourceVersion)) });
      this.#end(w);
    }
  }

  /** The server ends every watch cleanly (as at timeoutSeconds). */
  endWatches(): void {
    for (const w of [...this.#watches]) this.#end(w);
  }

  /** Every watch connection is cut (a TCP reset: an apiserver restart, a network blip). */
  dropWatches(): void {
    for (const w of [...this.#watches]) {
      this.#watches.delete(w);
      w.res.socket?.destroy();
    }
  }

  #expired(rv: number): Record<string, unknown> {
    return status(410, 'Expired', `too old resource version: ${rv} (${this.store.compactedAt})`);
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://sim');
    const watch = url.searchParams.get('watch') === '1' || url.searchParams.get('watch') === 'true';
    const rec: SimRequest = {
      path: url.pathname,
      query: url.searchParams,
      watch,
      resourceVersion: url.searchParams.get('resourceVersion') ?? '',
      authorization: req.headers.authorization,
      status: 200,
    };
    this.requests.push(rec);
    const answer = (code: number, body: unknown): void => {
      rec.status = code;
      res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-cache, private' });
      res.end(JSON.stringify(body));
      this.emit(watch ? 'watch' : 'list', rec);
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) return answer(401, status(401, 'Unauthorized', 'Unauthorized'));
    const m = PATH.exec(url.pathname);
    if (req.method !== 'GET' || !m) return answer(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const namespace = decodeURIComponent(m[1] ?? '');
    const verb = watch ? 'watch' : 'list';
    if (namespace !== this.#o.namespace) {
      const sa = this.#o.serviceAccount ?? `system:serviceaccount:${this.#o.namespace}:berth`;
      return answer(403, status(403, 'Forbidden', `endpointslices.discovery.k8s.io is forbidden: User "${sa}" cannot ${verb} resource "endpointslices" in API group "discovery.k8s.io" in the namespace "${namespace}"`));
    }
    const selector = url.searchParams.get('labelSelector') ?? '';
    const sel = /^kubernetes\.io\/service-name==?(.+)$/.exec(selector);
    if (selector !== '' && !sel) return answer(400, status(400, 'BadRequest', `k8s-sim understands only ${SERVICE_LABEL}=<name> selectors, not ${selector}`));
    const service = sel?.[1];
    if (!watch) {
      return answer(200, { kind: 'EndpointSliceList', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: String(this.store.resourceVersion) }, items: this.store.list(namespace, service) });
    }
    this.#startWatch(rec, res, namespace, service);
  }

  #startWatch(rec: SimRequest, res: ServerResponse, namespace: string, service: string | undefined): void {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache, private', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: OpenWatch = { req: rec, res, namespace, service, bookmarks: rec.query.get('allowWatchBookmarks') === 'true' };
    this.#watches.add(w);
    res.on('close', () => {
      this.#watches.delete(w);
      this.emit('watch-closed', rec);
    });
    const rv = rec.resourceVersion;
    if (rv === '' || rv === '0') {
      // "Any" version: the current state as ADDED events, then changes.
      for (const item of this.store.list(namespace, service)) this.#send(w, { type: 'ADDED', object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', ...item } });
    } else if (Number(rv) < this.store.compactedAt) {
      this.#send(w, { type: 'ERROR', object: this.#expired(Number(rv)) });
      this.#end(w);
    } else {
      for (const h of this.store.since(Number(rv))) this.#deliver(w, h);
    }
    this.emit('watch', rec);
  }

  #broadcast(h: HistoryEntry): void {
    for (const w of this.#watches) this.#deliver(w, h);
  }

  #deliver(w: OpenWatch, h: HistoryEntry): void {
    if (h.namespace !== w.namespace || (w.service !== undefined && h.service !== w.service)) return;
    this.#send(w, h.event);
  }

  #send(w: OpenWatch, ev: WatchEvent): void {
    w.res.write(`${JSON.stringify(ev)}\n`);
  }

  #end(w: OpenWatch): void {
    this.#watches.delete(w);
    w.res.end();
  }
}
