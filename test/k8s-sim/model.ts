/**
 * The simulator's state: EndpointSlices as the API server stores them (discovery.k8s.io/v1),
 * one resourceVersion counter for the whole "etcd", and the event history a watch from an old
 * resourceVersion replays. compact() forgets the history, as etcd compaction does: a watch from
 * before it gets 410 Gone.
 */
import { randomUUID } from 'node:crypto';

export interface SimEndpoint {
  addresses: string[];
  /** `null` leaves the condition out of the JSON (discovery.k8s.io/v1: absent ready means ready). */
  ready?: boolean | null;
  serving?: boolean | null;
  terminating?: boolean | null;
  nodeName?: string;
  podName?: string;
}

export interface SimPort {
  name?: string;
  port: number;
  protocol?: string;
}

export interface SliceSpec {
  name: string;
  /** The Service it belongs to (its kubernetes.io/service-name label); default the sim's service. */
  service?: string;
  addressType?: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: SimEndpoint[];
  /** Default one TCP port named "peer", 5051. */
  ports?: SimPort[];
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchEvent {
  type: EventType;
  object: Record<string, unknown>;
}

interface Stored {
  spec: SliceSpec;
  uid: string;
  resourceVersion: number;
  generation: number;
  created: string;
}

export interface HistoryEntry {
  rv: number;
  namespace: string;
  service: string;
  event: WatchEvent;
}

export const SERVICE_LABEL = 'kubernetes.io/service-name';

export class SliceStore {
  readonly namespace: string;
  readonly defaultService: string;
  readonly #slices = new Map<string, Stored>();
  readonly #serviceUid = randomUUID();
  #rv = 1000;
  #history: HistoryEntry[] = [];
  /** The oldest resourceVersion a watch may start from. */
  #compactedAt = 0;

  constructor(namespace: string, service: string) {
    this.namespace = namespace;
    this.defaultService = service;
  }

  get resourceVersion(): number {
    return this.#rv;
  }

  get compactedAt(): number {
    return this.#compactedAt;
  }

  /** Creates or replaces a slice; returns the event a watcher sees (not recorded when `silent`). */
  put(spec: SliceSpec, silent = false): HistoryEntry {
    const old = this.#slices.get(spec.name);
    const stored: Stored = {
      spec: structuredClone(spec),
      uid: old?.uid ?? randomUUID(),
      resourceVersion: ++this.#rv,
      generation: (old?.generation ?? 0) + 1,
      created: old?.created ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    };
    this.#slices.set(spec.name, stored);
    return this.#record(old ? 'MODIFIED' : 'ADDED', stored, silent);
  }

  delete(name: string, silent = false): HistoryEntry {
    const old = this.#slices.get(name);
    if (!old) throw new Error(`k8s-sim: no EndpointSlice ${name}`);
    this.#slices.delete(name);
    // A deletion has its own resourceVersion; the object sent is the last state with it.
    return this.#record('DELETED', { ...old, resourceVersion: ++this.#rv }, silent);
  }

  /** Some other object in the cluster changed: the resourceVersion moves, no slice does. */
  bump(): number {
    return ++this.#rv;
  }

  compact(): void {
    this.#compactedAt = this.#rv;
    this.#history = [];
  }

  /** Slices of one Service, as list items (no kind/apiVersion, as the API server sends them). */
  list(namespace: string, service: string | undefined): Array<Record<string, unknown>> {
    if (namespace !== this.namespace) return [];
    return [...this.#slices.values()].filter((s) => service === undefined || this.#service(s.spec) === service).map((s) => this.#json(s, false));
  }

  /** Recorded events after `rv` (exclusive). */
  since(rv: number): HistoryEntry[] {
    return this.#history.filter((h) => h.rv > rv);
  }

  #service(spec: SliceSpec): string {
    return spec.service ?? this.defaultService;
  }

  #record(type: EventType, stored: Stored, silent: boolean): HistoryEntry {
    const entry = { rv: stored.resourceVersion, namespace: this.namespace, service: this.#service(stored.spec), event: { type, object: this.#json(stored, true) } };
    if (!silent) this.#history.push(entry);
    return entry;
  }

  #json(s: Stored, withKind: boolean): Record<string, unknown> {
    const service = this.#service(s.spec);
    const endpoints = s.spec.endpoints.map((ep, i) => {
      const conditions: Record<string, boolean> = {};
      const ready = ep.ready === undefined ? true : ep.ready;
      if (ready !== null) conditions.ready = ready;
      const serving = ep.serving === undefined ? ready : ep.serving;
      if (serving !== null) conditions.serving = serving;
      const terminating = ep.terminating === undefined ? false : ep.terminating;
      if (terminating !== null) conditions.terminating = terminating;
      return {
        addresses: ep.addresses,
        conditions,
        nodeName: ep.nodeName ?? `node-${i}`,
        targetRef: { kind: 'Pod', namespace: this.namespace, name: ep.podName ?? `berth-${s.spec.name}-${i}`, uid: randomUUID() },
      };
    });
    return {
      ...(withKind ? { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1' } : {}),
      metadata: {
        name: s.spec.name,
        generateName: `${service}-`,
        namespace: this.namespace,
        uid: s.uid,
        resourceVersion: String(s.resourceVersion),
        generation: s.generation,
        creationTimestamp: s.created,
        labels: {
          'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
          [SERVICE_LABEL]: service,
          'service.kubernetes.io/headless': '',
        },
        ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: service, uid: this.#serviceUid, controller: true, blockOwnerDeletion: true }],
      },
      addressType: s.spec.addressType ?? 'IPv4',
      endpoints,
      ports: (s.spec.ports ?? [{ name: 'peer', port: 5051 }]).map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port })),
    };
  }
}
