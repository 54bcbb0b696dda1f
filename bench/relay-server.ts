/**
 * The hashing relays' program (run by bench/relay.ts in a process of its
 * own, so /proc counts its CPU apart from the bench's): the least any
 * mirror that checks digests does on a cold fill, and nothing more. Per
 * request for a blob URL it GETs the same path from the upstream with
 * node:http (passing the client's Authorization on: the relay holds no
 * credentials and does no token flow), SHA-256s every chunk and writes it
 * on to the client, one chunk behind: the last chunk goes out only after
 * the digest matched, as berth holds the last byte (a mismatch drops the
 * connection short). With `--write DIR` it also writes every chunk to a
 * temp file in DIR, as any caching mirror must, and fsyncs it after the
 * last byte (berth's last byte waits for the digest, not for the fsync),
 * then deletes it: no cache, no index, no metrics, no log, no retries.
 * What Node itself reaches doing that on this machine is the measured
 * ceiling of measure 2's loopback fill; never part of the daemon.
 *
 *   node relay-server.js PORT UPSTREAM_URL [--write DIR]
 */
import { createHash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface RelayOptions {
  /** The upstream registry's base URL, e.g. http://127.0.0.1:5000. */
  upstream: string;
  /** Where the temp files go; null: no disk (relay a). */
  writeDir: string | null;
}

const BLOB_URL = /^\/v2\/.+\/blobs\/sha256:([0-9a-f]{64})$/;
let seq = 0;

/** The relay as an http.Server, not yet listening. */
export function createRelay(opts: RelayOptions): http.Server {
  const up = new URL(opts.upstream);
  // One kept-alive socket per concurrent fill, as a mirror's pool keeps them.
  const agent = new http.Agent({ keepAlive: true });

  return http.createServer((req, res) => {
    const m = BLOB_URL.exec(req.url ?? '');
    if (!m || req.method !== 'GET') {
      res.writeHead(404).end();
      return;
    }
    const want = m[1]!;
    const headers: http.OutgoingHttpHeaders = req.headers.authorization ? { authorization: req.headers.authorization } : {};
    const upReq = http.get({ host: up.hostname, port: up.port, path: req.url, headers, agent }, (upRes) => {
      if (upRes.statusCode !== 200) {
        res.writeHead(upRes.statusCode ?? 502);
        upRes.pipe(res);
        return;
      }
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        ...(upRes.headers['content-length'] ? { 'content-length': upRes.headers['content-length'] } : {}),
        'docker-content-digest': `sha256:${want}`,
      });
      const hash = createHash('sha256');
      const tmp = opts.writeDir === null ? null : path.join(opts.writeDir, `fill-${process.pid}-${++seq}.tmp`);
      // flush: fsync before the stream closes its file.
      const file: WriteStream | null = tmp === null ? null : createWriteStream(tmp, { flush: true });
      const fail = (): void => {
        upRes.destroy();
        res.destroy();
        file?.destroy();
        if (tmp !== null) unlink(tmp).catch(() => {});
      };
      file?.once('error', fail);
      res.once('close', () => {
        if (!res.writableFinished) fail();
      });
      upRes.once('error', fail);

      // Backpressure: the upstream waits while the client or the file has a full buffer.
      let full = 0;
      const drained = (): void => {
        if (--full === 0) upRes.resume();
      };
      const write = (w: NodeJS.WritableStream, chunk: Buffer): void => {
        if (!w.write(chunk)) {
          full++;
          upRes.pause();
          w.once('drain', drained);
        }
      };
      /** The chunk not yet sent to the client: it may be the last one. */
      let held: Buffer | null = null;
      upRes.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        if (file) write(file, chunk);
        if (held) write(res, held);
        held = chunk;
      });
      upRes.once('end', () => {
        if (hash.digest('hex') !== want) {
          fail();
          return;
        }
        res.end(held ?? undefined);
        if (!file || tmp === null) return;
        // A cache would rename it into place after the fsync; the relay keeps nothing.
        file.once('close', () => unlink(tmp).catch(() => {}));
        file.end();
      });
    });
    upReq.once('error', () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end();
    });
    res.once('close', () => {
      if (!res.writableFinished) upReq.destroy();
    });
  });
}

function main(argv: string[]): void {
  const [portArg, upstream, flag, dir] = argv;
  if (!portArg || !upstream || (flag !== undefined && (flag !== '--write' || !dir))) {
    process.stderr.write('usage: relay-server.js PORT UPSTREAM_URL [--write DIR]\n');
    process.exit(2);
  }
  const server = createRelay({ upstream, writeDir: flag === '--write' ? dir! : null });
  server.keepAliveTimeout = 30_000;
  server.listen(Number(portArg), '127.0.0.1', () => process.stdout.write(`listening on 127.0.0.1:${portArg}\n`));
  process.once('SIGTERM', () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
