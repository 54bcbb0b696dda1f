/**
 * `snap set berth peers.*`: the snap options of a site peer become the [peers] section, in
 * berth's spelling, validated as `berth serve` loads it (the hook itself runs in
 * host-packaging.test.ts with a fake snapctl).
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { SNAP_SECTIONS, snapSettingsToToml } from '../../src/host/snap-config.js';

function load(t: { teardown(fn: () => unknown): void }, text: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-snap-peers-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(file, text);
  return loadConfig({ file, env: {} });
}

t.test('peers options are read by the hook', async (t) => {
  t.ok((SNAP_SECTIONS as readonly string[]).includes('peers'));
});

t.test('a static site: snap set berth peers.listen=… peers.key-file=… peers.members=…', async (t) => {
  const common = '/var/snap/berth/common';
  // snap set parses a JSON value: peers.members='["…","…"]' arrives as a list.
  const asList = snapSettingsToToml({ peers: { listen: '10.0.0.11:5051', 'key-file': `${common}/site.key`, members: ['10.0.0.11:5051', '10.0.0.12:5051'], 'clock-window': '20s' } }, common);
  const config = load(t, asList);
  t.match(config.peers, { listen: '10.0.0.11:5051', keyFile: `${common}/site.key`, membership: { kind: 'static', members: ['10.0.0.11:5051', '10.0.0.12:5051'] }, clockWindowMs: 20_000 });

  // A plain value is one string: a comma-separated list, as BERTH_PEERS_MEMBERS takes it.
  const asText = snapSettingsToToml({ peers: { listen: '10.0.0.11:5051', 'key-file': `${common}/site.key`, members: '10.0.0.11:5051, 10.0.0.12:5051,10.0.0.13:5051' } }, common);
  t.same(load(t, asText).peers?.membership, { kind: 'static', members: ['10.0.0.11:5051', '10.0.0.12:5051', '10.0.0.13:5051'] });
});

t.test('a DNS site', async (t) => {
  const text = snapSettingsToToml({ peers: { listen: '10.0.0.11:5051', 'key-file': '/k', dns: 'berth-peers.site.example:5051', 'resolve-interval': '10s', 'connect-timeout': '500ms' } }, '/common');
  t.match(load(t, text).peers, { membership: { kind: 'dns', name: 'berth-peers.site.example', port: 5051 }, resolveIntervalMs: 10_000, timeouts: { connectMs: 500 } });
  // dns-servers as one comma-separated string, like members.
  const servers = snapSettingsToToml({ peers: { listen: '10.0.0.11:5051', 'key-file': '/k', dns: 'berth-peers.site.example:5051', 'dns-servers': '10.0.0.2, 10.0.0.3:5353' } }, '/common');
  t.match(load(t, servers).peers, { membership: { kind: 'dns', servers: ['10.0.0.2', '10.0.0.3:5353'] } });
});

t.test('no peers options: no [peers] section; a bad value is named in snap spelling by the hook', async (t) => {
  t.equal(load(t, snapSettingsToToml({ peers: '' }, '/common')).peers, null);
  t.throws(() => snapSettingsToToml({ peers: 'x' }, '/common'), { message: /peers must be a group of options \(snap set berth peers.<key>=<value>\)/ });
  t.throws(() => load(t, snapSettingsToToml({ peers: { listen: '10.0.0.11:5051', 'key-file': '/k', members: ['10.0.0.11:5051'], 'clock-window': 'soon' } }, '/common')), { message: /peers\.clock_window: "soon" is not a duration/ });
});

// SPEC "On the node": the snap takes its config through `snap set`. [[prefetch]] (SPEC "Configuration")
// and [airgap] trust had no snap options, and a list key given as one string (harbor.projects=a,b)
// was refused as "expected a list" except for peers.members and peers.dns-servers.
t.test('prefetch.<name>.*, airgap.trust, and every list key as one comma-separated string', async (t) => {
  for (const s of ['prefetch', 'airgap']) t.ok((SNAP_SECTIONS as readonly string[]).includes(s), `the hook reads ${s}.*`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-snap-keys-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pub = path.join(dir, 'exporter.pub');
  const pass = path.join(dir, 'harbor.password');
  fs.writeFileSync(pub, 'public key\n');
  fs.writeFileSync(pass, 'secret\n');
  const text = snapSettingsToToml(
    {
      prefetch: { web: { image: 'docker.io/library/nginx:1.27', platforms: 'linux/amd64, linux/arm64' }, cache: { image: 'docker.io/library/redis:7' } },
      airgap: { trust: pub },
      harbor: { url: 'https://harbor.example.com', username: 'robot$edge', 'password-file': pass, projects: 'edge, dockerhub-proxy', 'prefetch-labels': 'edge-site' },
    },
    '/common',
  );
  const config = load(t, text);
  t.same(
    config.prefetch.map((p) => p.image),
    ['docker.io/library/redis:7', 'docker.io/library/nginx:1.27'],
    'in name order, as snapd hands them over',
  );
  t.same(config.prefetch[1]?.platforms, ['linux/amd64', 'linux/arm64']);
  t.same(config.airgap.trust, [pub]);
  t.match(config.harbor, { projects: ['edge', 'dockerhub-proxy'], prefetchLabels: ['edge-site'] });
  t.throws(() => snapSettingsToToml({ prefetch: 'x' }, '/common'), { message: /prefetch must be named groups/ });
});
