/**
 * A tiny authoritative DNS server over UDP for tests (RFC 1035 wire format, A and AAAA only):
 * names map to address lists in a table the test changes while the server runs, so membership
 * from DNS can be followed through members joining and leaving, and `failWith('SERVFAIL')` makes
 * every answer a failure, as a resolver whose upstream is down would give.
 *
 * Answers: a known name gets its records of the asked type (NOERROR with no answers when it has
 * none of that type: "NODATA"); an unknown name gets NXDOMAIN; any other query type gets NODATA
 * for a known name. The question is echoed byte for byte (resolvers compare it); EDNS records in
 * the query are ignored and none is sent back. Binds 127.0.0.1 on a port the kernel picks; point
 * a resolver at it with `new Resolver().setServers([server.address])`.
 */
import { EventEmitter } from 'node:events';
import dgram from 'node:dgram';
import { isIPv4, isIPv6 } from 'node:net';
import type { Teardown } from './procs.js';

export interface DnsRecords {
  a?: readonly string[];
  aaaa?: readonly string[];
  /** Seconds; 0 (the default) so that no resolver cache hides a change from the test. */
  ttl?: number;
}

export type DnsRcode = 'NOERROR' | 'SERVFAIL' | 'NXDOMAIN' | 'REFUSED';

export interface DnsQuery {
  /** Lower case, without the trailing dot. */
  name: string;
  /** 'A', 'AAAA' or the numeric type. */
  type: string;
  rcode: DnsRcode;
  /** Addresses answered. */
  answers: string[];
}

export interface DnsServer {
  /** "127.0.0.1:PORT", for `Resolver.setServers`. */
  readonly address: string;
  readonly port: number;
  /** Sets (replaces) the records of `name`. */
  set(name: string, records: DnsRecords): void;
  /** Forgets `name`: it is answered NXDOMAIN from now on. */
  delete(name: string): void;
  /**
   * Answers every query (or only those of `type`) with `rcode` and no records; undefined to
   * answer from the table again.
   */
  failWith(rcode: Exclude<DnsRcode, 'NOERROR'> | undefined, type?: 'A' | 'AAAA'): void;
  /** Every query answered so far, in order. */
  readonly queries: readonly DnsQuery[];
  /** Resolves with the first query answered from now on that satisfies `pred`. */
  nextQuery(pred?: (q: DnsQuery) => boolean, timeoutMs?: number): Promise<DnsQuery>;
  close(): Promise<void>;
}

const RCODES: Record<DnsRcode, number> = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 };
const TYPE_A = 1;
const TYPE_AAAA = 28;
const CLASS_IN = 1;

function ipv4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

/** 16 bytes of an IPv6 address in text form (no embedded IPv4 form; tests do not need it). */
export function ipv6Bytes(ip: string): Buffer {
  const [head = '', tail] = ip.split('::');
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const h = groups(head);
  const tl = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - tl.length).fill('0'), ...tl];
  if (all.length !== 8) throw new Error(`not an IPv6 address the test server understands: ${ip}`);
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

interface Question {
  name: string;
  type: number;
  /** Offset just past the question, to copy it into the answer. */
  end: number;
}

/** The first question of a query; undefined when the packet is not one we can read. */
function parseQuestion(msg: Buffer): Question | undefined {
  if (msg.length < 12 || msg.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let pos = 12;
  for (;;) {
    const len = msg[pos];
    if (len === undefined || len > 63) return undefined; // compression pointers do not occur in questions
    pos++;
    if (len === 0) break;
    if (pos + len > msg.length) return undefined;
    labels.push(msg.subarray(pos, pos + len).toString('latin1'));
    pos += len;
  }
  if (pos + 4 > msg.length) return undefined;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(pos), end: pos + 4 };
}

function answer(query: Buffer, q: Question, rcode: DnsRcode, rdata: Buffer[], ttl: number): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0); // id
  const rd = query.readUInt16BE(2) & 0x0100;
  header.writeUInt16BE(0x8000 | 0x0400 | rd | 0x0080 | RCODES[rcode], 2); // QR, AA, RD as asked, RA, rcode
  header.writeUInt16BE(1, 4); // one question
  header.writeUInt16BE(rdata.length, 6);
  const records = rdata.map((data) => {
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(q.type, 2);
    rr.writeUInt16BE(CLASS_IN, 4);
    rr.writeUInt32BE(ttl, 6);
    rr.writeUInt16BE(data.length, 10);
    return Buffer.concat([rr, data]);
  });
  return Buffer.concat([header, query.subarray(12, q.end), ...records]);
}

export async function startDnsServer(t: Teardown): Promise<DnsServer> {
  const table = new Map<string, DnsRecords>();
  const queries: DnsQuery[] = [];
  const events = new EventEmitter();
  let failing: { rcode: DnsRcode; type: number | undefined } | undefined;
  const socket = dgram.createSocket('udp4');

  socket.on('message', (msg, peer) => {
    const q = parseQuestion(msg);
    if (q === undefined) return;
    const known = table.get(q.name);
    let rcode: DnsRcode;
    let addresses: string[] = [];
    if (failing !== undefined && (failing.type === undefined || failing.type === q.type)) rcode = failing.rcode;
    else if (known === undefined) rcode = 'NXDOMAIN';
    else {
      rcode = 'NOERROR';
      if (q.type === TYPE_A) addresses = [...(known.a ?? [])];
      else if (q.type === TYPE_AAAA) addresses = [...(known.aaaa ?? [])];
    }
    const rdata = addresses.map((ip) => (q.type === TYPE_A ? ipv4Bytes(ip) : ipv6Bytes(ip)));
    const record: DnsQuery = { name: q.name, type: q.type === TYPE_A ? 'A' : q.type === TYPE_AAAA ? 'AAAA' : String(q.type), rcode, answers: addresses };
    socket.send(answer(msg, q, rcode, rdata, known?.ttl ?? 0), peer.port, peer.address, () => {
      // Recorded once sent, so a test that saw the query can rely on the answer being on its way.
      queries.push(record);
      events.emit('query', record);
    });
  });

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const port = socket.address().port;

  let closed = false;
  const close = (): Promise<void> => {
    if (closed) return Promise.resolve();
    closed = true;
    return new Promise((resolve) => socket.close(() => resolve()));
  };
  t.teardown(close);

  return {
    address: `127.0.0.1:${port}`,
    port,
    set(name, records) {
      for (const ip of records.a ?? []) if (!isIPv4(ip)) throw new Error(`not an IPv4 address: ${ip}`);
      for (const ip of records.aaaa ?? []) if (!isIPv6(ip)) throw new Error(`not an IPv6 address: ${ip}`);
      table.set(name.toLowerCase().replace(/\.$/, ''), { ...records });
    },
    delete(name) {
      table.delete(name.toLowerCase().replace(/\.$/, ''));
    },
    failWith(rcode, type) {
      failing = rcode === undefined ? undefined : { rcode, type: type === undefined ? undefined : type === 'A' ? TYPE_A : TYPE_AAAA };
    },
    queries,
    nextQuery(pred = () => true, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const onQuery = (q: DnsQuery): void => {
          if (!pred(q)) return;
          clearTimeout(timer);
          events.off('query', onQuery);
          resolve(q);
        };
        const timer = setTimeout(() => {
          events.off('query', onQuery);
          reject(new Error(`no matching DNS query within ${timeoutMs} ms`));
        }, timeoutMs);
        events.on('query', onQuery);
      });
    },
    close,
  };
}
