/**
 * A real Prometheus server (Debian's `prometheus` package) on 127.0.0.1, a
 * port chosen at run time, its own storage under a temp dir, stopped by pid.
 * Tests ask it through its HTTP API (/api/v1/query, /api/v1/targets).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort, spawnService, tempDirFor, waitFor, type Service, type Teardown } from './procs.js';

export const PROMETHEUS_BIN = process.env.BERTH_TEST_PROMETHEUS ?? '/usr/bin/prometheus';

export interface Prometheus {
  url: string;
  service: Service;
  /** An instant query's result vector (throws on an error answer). */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** Resolves once every target is up; rejects after timeoutMs naming the ones that are not. */
  waitForTargetsUp(n: number, timeoutMs?: number): Promise<void>;
}

export async function startPrometheus(t: Teardown, opts: { scrapeConfigs: unknown[]; ruleFiles?: string[] }): Promise<Prometheus> {
  const dir = await tempDirFor(t, 'berth-prometheus');
  const port = await freePort();
  const config = { global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' }, rule_files: opts.ruleFiles ?? [], scrape_configs: opts.scrapeConfigs };
  const file = path.join(dir, 'prometheus.yml');
  // JSON is YAML.
  await writeFile(file, JSON.stringify(config, null, 2));
  const service = spawnService('prometheus', PROMETHEUS_BIN, [
    `--config.file=${file}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=info',
  ]);
  t.teardown(() => service.stop('SIGTERM', 10_000));
  await service.waitForOutput(/Server is ready to receive web requests/, 30_000);
  const url = `http://127.0.0.1:${port}`;
  const query: Prometheus['query'] = async (expr) => {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error ?? res.status}`);
    return body.data?.resultType === 'vector' ? body.data.result : [];
  };
  return {
    url,
    service,
    query,
    async waitForTargetsUp(n, timeoutMs = 30_000) {
      let last = '';
      await waitFor(
        `${n} Prometheus targets up`,
        async () => {
          const res = (await (await fetch(`${url}/api/v1/targets`)).json()) as { data: { activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string }> } };
          const active = res.data.activeTargets;
          last = active.map((a) => `${a.scrapeUrl} ${a.health} ${a.lastError}`).join('; ');
          return active.length === n && active.every((a) => a.health === 'up');
        },
        { timeoutMs, intervalMs: 250 },
      ).catch((err: Error) => {
        throw new Error(`${err.message} (${last})`);
      });
    },
  };
}
