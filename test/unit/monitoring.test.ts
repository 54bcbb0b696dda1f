/**
 * deploy/monitoring checked for what docs/monitoring.md promises: the
 * dashboard's variables and no hard-coded datasource, the rules through
 * promtool (check, and the unit tests that fire and do not fire each alert),
 * the PrometheusRule equal to the plain rules file, and the scrape objects
 * (pod annotations, the metrics port, the ServiceMonitor's Service) pointing at
 * the address berth's config in the DaemonSet gives the metrics listener.
 * The e2e test (test/e2e/monitoring.test.ts) runs every panel against a real Prometheus.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config/load.js';
import { NO_YAML, at, containerEnv, list, yamlDocs } from '../harness/yaml.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MON = path.join(REPO, 'deploy/monitoring');

type Result = { code: number; stdout: string; stderr: string };
function run(cmd: string, args: string[], cwd = MON): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const NO_PROMTOOL = (await run('promtool', ['--version'])).code === 0 ? false : 'promtool is not installed (scripts/install-test-deps.sh installs prometheus)';


t.test('the dashboard: variables, and every datasource is ${datasource}', async (t) => {
  const dash = JSON.parse(fs.readFileSync(path.join(MON, 'berth-dashboard.json'), 'utf8')) as Record<string, unknown>;
  t.notOk('__inputs' in dash, 'no __inputs: imports as it is');
  const vars = list(at(dash, 'templating', 'list'));
  const v = (name: string) => vars.find((x) => at(x, 'name') === name);
  t.equal(at(v('datasource'), 'type'), 'datasource');
  t.equal(at(v('datasource'), 'query'), 'prometheus');
  t.equal(at(v('instance'), 'type'), 'query', 'a node (instance) variable');
  t.match(String(at(v('instance'), 'definition')), /^label_values\(berth_\w+\{job=~"\$job"\}, instance\)$/);
  t.equal(at(v('job'), 'type'), 'query');
  for (const x of [v('instance'), v('job')]) {
    t.equal(at(x, 'includeAll'), true);
    t.equal(at(x, 'allValue'), '.*', 'All is a regex the =~ matchers take');
  }
  // Every datasource reference anywhere is the variable: never a UID of someone's Grafana.
  const refs: unknown[] = [];
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) x.forEach(walk);
    else if (x !== null && typeof x === 'object') {
      for (const [k, val] of Object.entries(x)) {
        if (k === 'datasource') refs.push(val);
        walk(val);
      }
    }
  };
  walk(dash);
  t.ok(refs.length > 20);
  t.same([...new Set(refs.map((r) => JSON.stringify(r)))], [JSON.stringify({ type: 'prometheus', uid: '${datasource}' })], 'one datasource reference, the variable');
  const panels = list(at(dash, 'panels')).filter((p) => at(p, 'type') !== 'row');
  const titles = panels.map((p) => String(at(p, 'title')));
  t.equal(new Set(titles).size, titles.length, 'titles are unique');
  for (const want of [/hit ratio/i, /served by source/i, /saved/i, /reachability/i, /latency/i, /coalesced/i, /max_size/i, /evictions/i, /pins/i, /refusals by reason and project/i, /snapshot age vs offline_grace/i, /from and to peers/i]) {
    t.ok(titles.some((x) => want.test(x)), `a panel for ${want}`);
  }
  for (const p of panels) {
    t.ok(String(at(p, 'description')).length > 20, `${String(at(p, 'title'))} says what it answers`);
    const targets = list(at(p, 'targets'));
    t.ok(targets.length > 0);
    for (const target of targets) t.match(String(at(target, 'expr')), /instance=~"\$instance"/, `${String(at(p, 'title'))}: follows the node variable`);
  }
});

t.test('promtool check rules', { skip: NO_PROMTOOL }, async (t) => {
  const r = await run('promtool', ['check', 'rules', 'berth-rules.yml']);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout + r.stderr, /SUCCESS: 6 rules found/);
});

t.test('promtool test rules: each alert fires and stays quiet', { skip: NO_PROMTOOL }, async (t) => {
  const r = await run('promtool', ['test', 'rules', 'berth-rules.test.yml']);
  t.equal(r.code, 0, r.stdout + r.stderr);
  const tests = fs.readFileSync(path.join(MON, 'berth-rules.test.yml'), 'utf8');
  for (const alert of ['BerthDown', 'BerthPolicySnapshotAgingOut', 'BerthPolicySnapshotExpired', 'BerthCacheOverHighWatermark', 'BerthUpstreamUnreachable', 'BerthBlobsQuarantined']) {
    const evals = [...tests.matchAll(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:( \\[\\])?`, 'g'))];
    t.ok(evals.some((m) => m[1] === undefined) && evals.some((m) => m[1] === ' []'), `${alert}: a firing case and a quiet one`);
  }
});

t.test('promtool catches a broken rule (the check is not vacuous)', { skip: NO_PROMTOOL }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-rules-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const rules = fs.readFileSync(path.join(MON, 'berth-rules.yml'), 'utf8').replace('> 0.75) <= 1', '> 0.95) <= 1');
  fs.writeFileSync(path.join(dir, 'berth-rules.yml'), rules);
  fs.copyFileSync(path.join(MON, 'berth-rules.test.yml'), path.join(dir, 'berth-rules.test.yml'));
  const r = await run('promtool', ['test', 'rules', 'berth-rules.test.yml'], dir);
  t.not(r.code, 0, 'a threshold moved from 75% to 95% fails the unit tests');
});

t.test('the PrometheusRule holds the same rules; each alert says what to do', { skip: NO_YAML }, async (t) => {
  const [plain] = await yamlDocs(path.join(MON, 'berth-rules.yml'));
  const [crd] = await yamlDocs(path.join(MON, 'berth-prometheusrule.yaml'));
  t.equal(at(crd, 'kind'), 'PrometheusRule');
  t.equal(at(crd, 'apiVersion'), 'monitoring.coreos.com/v1');
  t.same(at(crd, 'spec'), plain, 'spec.groups equal the rules file');
  for (const rule of list(at(plain, 'groups', 0, 'rules'))) {
    const name = String(at(rule, 'alert'));
    t.match(String(at(rule, 'annotations', 'summary')), /\{\{ \$labels\.instance \}\}/, `${name}: the summary names the node`);
    t.match(String(at(rule, 'annotations', 'description')), /`berth (doctor|status|verify|sync|unpin)/, `${name}: the description gives the berth command to run`);
    t.ok(['warning', 'critical'].includes(String(at(rule, 'labels', 'severity'))), `${name}: severity`);
    t.type(at(rule, 'for'), 'string', `${name}: a for: (the knob)`);
  }
});


t.test('scraping: annotations, the metrics port and the ServiceMonitor lead to the metrics listener', { skip: NO_YAML }, async (t) => {
  const docs = await yamlDocs(path.join(REPO, 'deploy/kubernetes/berth-daemonset.yaml'));
  const ds = docs.find((d) => at(d, 'kind') === 'DaemonSet');
  const cm = docs.find((d) => at(d, 'kind') === 'ConfigMap');
  const main = at(ds, 'spec', 'template', 'spec', 'containers', 0);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-mon-k8s-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(file, String(at(cm, 'data', 'berth.toml')));
  const config = loadConfig({ file, env: containerEnv(main, { 'status.podIP': '10.0.0.11' }) });
  t.same(config.server.metricsListen, { listen: '10.0.0.11:9464', host: '10.0.0.11', port: 9464 }, "the metrics listener on the node's address (BERTH_SERVER_METRICS_LISTEN)");
  t.equal(config.server.host, '127.0.0.1', 'the registry API stays on loopback');
  const ann = at(ds, 'spec', 'template', 'metadata', 'annotations') as Record<string, string>;
  t.same(ann, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(config.server.metricsListen?.port), 'prometheus.io/path': '/metrics' }, 'scrape annotations');
  const port = list(at(main, 'ports')).find((p) => at(p, 'name') === 'metrics');
  t.equal(at(port, 'containerPort'), config.server.metricsListen?.port, 'a container port named metrics');

  const [svc, sm] = await yamlDocs(path.join(MON, 'berth-servicemonitor.yaml'));
  t.equal(at(svc, 'kind'), 'Service');
  t.equal(at(sm, 'kind'), 'ServiceMonitor');
  t.equal(at(svc, 'metadata', 'namespace'), at(ds, 'metadata', 'namespace'));
  const podLabels = at(ds, 'spec', 'template', 'metadata', 'labels') as Record<string, string>;
  t.ok(Object.entries(at(svc, 'spec', 'selector') as Record<string, string>).every(([k, v]) => podLabels[k] === v), "the Service selects berth's pods");
  t.equal(at(svc, 'spec', 'clusterIP'), 'None', 'headless: one endpoint per node');
  t.equal(at(svc, 'spec', 'publishNotReadyAddresses'), true, 'a berth that is not ready is still scraped');
  const svcPort = list(at(svc, 'spec', 'ports')).find((p) => at(p, 'name') === 'metrics');
  t.equal(at(svcPort, 'targetPort'), 'metrics');
  const svcLabels = at(svc, 'metadata', 'labels') as Record<string, string>;
  t.ok(Object.entries(at(sm, 'spec', 'selector', 'matchLabels') as Record<string, string>).every(([k, v]) => svcLabels[k] === v), 'the ServiceMonitor selects that Service');
  const peersSvc = docs.find((d) => at(d, 'kind') === 'Service');
  const peersLabels = at(peersSvc, 'metadata', 'labels') as Record<string, string>;
  t.notOk(Object.entries(at(sm, 'spec', 'selector', 'matchLabels') as Record<string, string>).every(([k, v]) => peersLabels[k] === v), 'and not berth-peers');
  t.equal(svcLabels[String(at(sm, 'spec', 'jobLabel'))], 'berth', 'job="berth", as the rules expect');
  t.same(list(at(sm, 'spec', 'namespaceSelector', 'matchNames')), [at(svc, 'metadata', 'namespace')]);
  t.equal(at(sm, 'spec', 'endpoints', 0, 'port'), 'metrics');
  t.equal(at(sm, 'spec', 'endpoints', 0, 'path'), '/metrics');
});

t.test('the example Prometheus config', { skip: NO_PROMTOOL || NO_YAML }, async (t) => {
  const [cfg] = await yamlDocs(path.join(MON, 'prometheus-example.yml'));
  t.same(list(at(cfg, 'rule_files')), ['berth-rules.yml']);
  t.equal(at(cfg, 'scrape_configs', 0, 'job_name'), 'berth', 'the job the rules expect');
  const r = await run('promtool', ['check', 'config', 'prometheus-example.yml']);
  // Debian's prometheus is built without Kubernetes service discovery.
  if (/field kubernetes_sd_configs not found/.test(r.stdout + r.stderr)) {
    t.comment("this promtool has no Kubernetes service discovery (Debian's build): the example config is not checked by it");
    return;
  }
  t.equal(r.code, 0, r.stdout + r.stderr);
});
