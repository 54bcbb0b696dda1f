/**
 * nginx serving a Distribution registry's blob files with sendfile, at the
 * registry's own blob URLs: the practical limit of disk + loopback that a
 * mirror's warm path is measured against. One process (master_process off),
 * like berth's one JS thread, stopped by pid like every other peer; the
 * files are the upstream's (never wiped by a cold run, same bytes the
 * mirrors copy).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort, spawnService, tempDirFor, waitForHttp, type Service, type Teardown } from '../test/harness/procs.js';

export interface Nginx {
  url: string;
  service: Service;
}

const q = (s: string): string => JSON.stringify(s);

/** `registryDataDir` is a Distribution filesystem root (`…/docker/registry/v2/blobs/sha256/ab/<hex>/data`). */
export async function startNginx(t: Teardown, registryDataDir: string): Promise<Nginx> {
  const dir = await tempDirFor(t, 'berth-bench-nginx');
  const port = await freePort();
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(path.join(dir, 'tmp', d), { recursive: true });
  const blobs = path.join(registryDataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256');
  const conf = [
    'daemon off;',
    'master_process off;',
    `pid ${q(path.join(dir, 'nginx.pid'))};`,
    `error_log ${q(path.join(dir, 'error.log'))} warn;`,
    'events { worker_connections 1024; }',
    'http {',
    '  access_log off;',
    '  sendfile on;',
    '  tcp_nopush on;',
    '  types { }',
    '  default_type application/octet-stream;',
    ...['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((d) => `  ${d === 'body' ? 'client_body' : d}_temp_path ${q(path.join(dir, 'tmp', d))};`),
    '  server {',
    `    listen 127.0.0.1:${port};`,
    '    location ~ "^/v2/.+/blobs/sha256:(([0-9a-f]{2})[0-9a-f]{62})$" {',
    `      alias ${q(`${blobs}/$2/$1/data`)};`,
    '    }',
    '    location / { return 404; }',
    '  }',
    '}',
    '',
  ].join('\n');
  const confFile = path.join(dir, 'nginx.conf');
  await writeFile(confFile, conf);
  const service = spawnService('nginx', 'nginx', ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', confFile]);
  t.teardown(() => service.stop('SIGTERM', 10_000));
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, { timeoutMs: 15_000, abortOn: service.exited }).catch((err: unknown) => {
    throw new Error(`nginx did not start: ${err instanceof Error ? err.message : String(err)}\n${service.output().slice(-2000)}`);
  });
  return { url, service };
}
