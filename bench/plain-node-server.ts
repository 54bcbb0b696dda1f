/**
 * The plain Node peer's program (run by bench/plain-node.ts in a process of
 * its own, so /proc counts its CPU apart from the bench's): node:http,
 * `createReadStream` of the blob file with a 1 MiB highWaterMark piped to
 * the response, at the registry's blob URLs over a Distribution's blob
 * files, as nginx serves them. No digest check, no index, no metrics, no
 * log: what Node itself costs to move a file to a socket, the ceiling
 * berth's own overhead is measured against.
 *
 *   node plain-node-server.js PORT BLOBS_DIR   (BLOBS_DIR: …/v2/blobs/sha256)
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

const [portArg, blobs] = process.argv.slice(2);
if (!portArg || !blobs) {
  process.stderr.write('usage: plain-node-server.js PORT BLOBS_DIR\n');
  process.exit(2);
}
const BLOB_URL = /^\/v2\/.+\/blobs\/sha256:(([0-9a-f]{2})[0-9a-f]{62})$/;

const server = http.createServer((req, res) => {
  const m = BLOB_URL.exec(req.url ?? '');
  if (!m || (req.method !== 'GET' && req.method !== 'HEAD')) {
    res.writeHead(404).end();
    return;
  }
  const file = path.join(blobs, m[2]!, m[1]!, 'data');
  stat(file).then(
    (st) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size, 'docker-content-digest': `sha256:${m[1]}` });
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      const body = createReadStream(file, { highWaterMark: 1024 * 1024 });
      body.once('error', () => res.destroy());
      res.once('close', () => body.destroy());
      body.pipe(res);
    },
    () => res.writeHead(404).end(),
  );
});
server.keepAliveTimeout = 30_000;
server.listen(Number(portArg), '127.0.0.1', () => process.stdout.write(`listening on 127.0.0.1:${portArg}\n`));
process.once('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
