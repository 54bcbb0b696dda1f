/**
 * The throughput client: undici `request` on a dedicated Agent, counting
 * and discarding the body bytes. It runs in the bench's own process on the
 * same cores as the servers, so it can be the limit itself: nginx's figure
 * in the same run is that ceiling (client + loopback + page cache).
 */
import { Agent, request } from 'undici';
import { now } from './stats.js';

export interface Transfer {
  bytes: number;
  ms: number;
  /** ms from the request to the first body byte. */
  ttfbMs: number;
}

export class BlobClient {
  private readonly agent = new Agent({
    connections: 128,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });

  /** GETs `url` to the end; throws unless it is a 200 with `expectBytes` bytes. */
  async get(url: string, expectBytes: number, headers: Record<string, string> = {}): Promise<Transfer> {
    const t0 = now();
    const res = await request(url, { dispatcher: this.agent, method: 'GET', headers });
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => '');
      throw new Error(`GET ${url}: status ${res.statusCode} ${text.slice(0, 300)}`);
    }
    let ttfbMs = -1;
    const bytes = await new Promise<number>((resolve, reject) => {
      let n = 0;
      res.body.on('data', (chunk: Buffer) => {
        if (n === 0) ttfbMs = now() - t0;
        n += chunk.length;
      });
      res.body.once('end', () => resolve(n));
      res.body.once('error', reject);
    });
    const ms = now() - t0;
    if (bytes !== expectBytes) throw new Error(`GET ${url}: got ${bytes} bytes, expected ${expectBytes}`);
    return { bytes, ms, ttfbMs };
  }

  /** `n` concurrent GETs of `url`: total bytes, and ms from the first request to the last byte of all. */
  async getConcurrent(url: string, n: number, expectBytes: number, headers: Record<string, string> = {}): Promise<Transfer & { each: Transfer[] }> {
    const t0 = now();
    const each = await Promise.all(Array.from({ length: n }, () => this.get(url, expectBytes, headers)));
    return { bytes: each.reduce((s, x) => s + x.bytes, 0), ms: now() - t0, ttfbMs: Math.min(...each.map((x) => x.ttfbMs)), each };
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
