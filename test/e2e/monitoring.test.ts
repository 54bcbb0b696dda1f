/**
 * Issue 14: every panel of the Grafana dashboard returns data from a real
 * berth. A real Prometheus (Debian's package) scrapes two berths of one site
 * through their metrics listeners ([server] metrics_listen, on 127.0.0.1 and
 * 127.0.0.2) with the alert rules loaded; the berths front the Harbor
 * simulator (real Distribution underneath), sync its policies, serve a pull by
 * real containerd, fetch each other's blobs as site peers, and refuse a
 * vulnerable image. Then each panel expression, read from the dashboard JSON
 * with its template variables set to "All", must return at least one series
 * through /api/v1/query (polled until it does: no sleeps).
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ROBOT_ACCESS, startHarborSim } from '../harbor-sim/index.js';
import { makeImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { REPO_ROOT, startBerth, type Berth } from '../harness/berth.js';
import { OCI_ACCEPT } from '../harness/harbor-pulls.js';
import { freePort, tempDirFor, waitFor } from '../harness/procs.js';
import { startPrometheus } from '../harness/prometheus.js';

const MONITORING = path.join(REPO_ROOT, 'deploy/monitoring');

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr: string }>;
}

/** Panel expressions with the dashboard's variables as Grafana sends them with "All" selected. */
export function panelQueries(dashboard: { panels: Panel[] }): Array<{ panel: string; expr: string }> {
  const out: Array<{ panel: string; expr: string }> = [];
  for (const p of dashboard.panels) {
    if (p.type === 'row') continue;
    for (const target of p.targets ?? []) {
      const expr = target.expr
        .replace(/\$__rate_interval/g, '30s')
        .replace(/\$__range/g, '1h')
        .replace(/\$\{?job\}?/g, '.*')
        .replace(/\$\{?instance\}?/g, '.*');
      out.push({ panel: p.title, expr });
    }
  }
  return out;
}

/**
 * Panels allowed to stay empty here, with the reason. Keep this short: each
 * entry is a panel this test does not prove.
 */
const MAY_BE_EMPTY: Record<string, string> = {};

t.test('every dashboard panel returns data from berths scraped by a real Prometheus', async (t) => {
  const work = await tempDirFor(t, 'berth-monitoring');
  const sim = await startHarborSim(t);
  sim.addRobot('robot$edge-sync', 'Robot-Secret-1', { permissions: [{ kind: 'project', namespace: '*', access: ROBOT_ACCESS }] });
  sim.addProject('edge', { public: true, metadata: { prevent_vul: 'true', severity: 'high', reuse_sys_cve_allowlist: 'false' } });
  const cleanImg = await makeImage(path.join(work, 'clean'), { layers: 4, layerSize: 50_000, seed: 'mon-clean', tag: 'v1' });
  const vulnImg = await makeImage(path.join(work, 'vuln'), { layers: 1, layerSize: 30_000, seed: 'mon-vuln', tag: 'v1' });
  const clean = await sim.pushImage('edge', 'clean', 'v1', cleanImg);
  const vuln = await sim.pushImage('edge', 'vuln', 'v1', vulnImg);
  sim.setScan('edge', 'clean', clean, { status: 'Success', vulnerabilities: [] });
  sim.setScan('edge', 'vuln', vuln, { status: 'Success', vulnerabilities: [{ id: 'CVE-2024-1001', package: 'openssl', version: '3.0.11', severity: 'High' }] });

  const pw = path.join(work, 'robot.password');
  fs.writeFileSync(pw, 'Robot-Secret-1\n', { mode: 0o600 });
  const keyFile = path.join(work, 'site.key');
  fs.writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
  const nodes = [1, 2].map((i) => `127.0.0.${i}`);
  const peers = await Promise.all(nodes.map(async (ip) => `${ip}:${await freePort()}`));
  const scrape = await Promise.all(nodes.map(async (ip) => `${ip}:${await freePort()}`));
  const harbor = { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h', offline_grace: '72h', on_expired: 'deny' };
  const [a, b] = (await Promise.all(
    nodes.map((_, i) =>
      startBerth(t, {
        upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
        extra: { harbor, peers: { listen: peers[i], key_file: keyFile, members: peers } },
        // How the DaemonSet sets it: the environment, per node.
        env: { BERTH_SERVER_METRICS_LISTEN: scrape[i] },
      }),
    ),
  )) as [Berth, Berth];
  for (const n of [a, b]) t.equal((await n.cli(['sync'])).code, 0, 'policies synced');

  const prom = await startPrometheus(t, {
    ruleFiles: [path.join(MONITORING, 'berth-rules.yml')],
    scrapeConfigs: [{ job_name: 'berth', static_configs: [{ targets: scrape }] }],
  });
  await prom.waitForTargetsUp(2);

  // Traffic: containerd pulls the clean image through node A; node B then reads the same
  // blobs (each comes from whichever node owns it: the other one's are peer bytes); the
  // vulnerable image is refused; one blob is read again from A's cache.
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsToml(hostsDir, sim.host, a.url);
  const ctd = await startContainerd(t);
  const pulled = await ctd.pull(`${sim.host}/edge/clean:v1`, { hostsDir });
  t.equal(pulled.code, 0, `pull through berth: ${pulled.stderr}`);
  const get = async (n: Berth, p: string) => {
    const res = await fetch(`${n.url}/v2/${p}?ns=${sim.host}`, { headers: { Accept: OCI_ACCEPT } });
    await res.arrayBuffer();
    return res.status;
  };
  t.equal(await get(b, 'edge/clean/manifests/v1'), 200);
  for (const bl of cleanImg.blobs) t.equal(await get(b, `edge/clean/blobs/${bl.digest}`), 200, `node B serves ${bl.digest.slice(7, 19)}`);
  t.equal(await get(a, `edge/clean/blobs/${cleanImg.blobs[0]!.digest}`), 200, 'again from the cache');
  const refused = await ctd.pull(`${sim.host}/edge/vuln:v1`, { hostsDir });
  t.not(refused.code, 0, 'the vulnerable image is refused');

  await t.test('the variables find both berths', async (t) => {
    const res = (await (await fetch(`${prom.url}/api/v1/label/instance/values?${new URLSearchParams({ 'match[]': 'berth_cache_size_bytes{job=~".*"}' })}`)).json()) as { data: string[] };
    t.same([...res.data].sort(), [...scrape].sort(), 'label_values(berth_cache_size_bytes, instance)');
  });

  await t.test('each panel expression returns at least one series', async (t) => {
    const dashboard = JSON.parse(fs.readFileSync(path.join(MONITORING, 'berth-dashboard.json'), 'utf8')) as { panels: Panel[] };
    const queries = panelQueries(dashboard);
    t.ok(queries.length >= 20, `${queries.length} expressions`);
    const pending = new Map(queries.filter((q) => !(q.panel in MAY_BE_EMPTY)).map((q) => [q.expr, q.panel]));
    // Counters need two scrapes after the traffic; the snapshot age, a scrape after the sync.
    await waitFor(
      'every panel expression to return a series',
      async () => {
        for (const expr of [...pending.keys()]) if ((await prom.query(expr)).length > 0) pending.delete(expr);
        return pending.size === 0;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    ).catch((err: Error) => t.fail(`${err.message}; empty: ${[...pending].map(([e, p]) => `${p}: ${e}`).join(' | ')}`));
    t.equal(pending.size, 0, 'no panel without data');
    // A few values that say the traffic is what it should be, not only present.
    const value = async (expr: string) => Number((await prom.query(expr))[0]?.value[1] ?? NaN);
    t.ok((await value('sum(berth_peer_bytes_total{direction="received"})')) > 0, 'bytes crossed between the peers');
    t.ok((await value('sum(berth_served_bytes_total{source="cache"})')) > 0, 'bytes served from the cache');
    const refusals = await prom.query('berth_policy_denials_total');
    t.ok(refusals.some((r) => r.metric.project === 'edge' && r.metric.reason === 'upstream'), `the refusal (Harbor's own, on a first pull), by reason and project: ${JSON.stringify(refusals.map((r) => r.metric))}`);
    t.equal(await value('max(berth_policy_offline_grace_seconds)'), 72 * 3600);
  });

  await t.test('the rules are loaded and quiet on a healthy site', async (t) => {
    const res = (await (await fetch(`${prom.url}/api/v1/rules`)).json()) as { data: { groups: Array<{ rules: Array<{ name: string; health: string; state: string }> }> } };
    const rules = res.data.groups.flatMap((g) => g.rules);
    t.same(rules.map((r) => r.name).sort(), ['BerthBlobsQuarantined', 'BerthCacheOverHighWatermark', 'BerthDown', 'BerthPolicySnapshotAgingOut', 'BerthPolicySnapshotExpired', 'BerthUpstreamUnreachable']);
    t.ok(rules.every((r) => r.health !== 'err'), 'every rule evaluates');
    t.same(rules.filter((r) => r.state !== 'inactive').map((r) => r.name), [], 'none pending or firing');
  });
});
