/**
 * hosts.toml merging as pure functions: realistic files an operator has
 * (MicroK8s' shipped docker.io file, a site mirror someone added), parsed back
 * after rendering, and stable under repetition.
 */
import t from 'tap';
import { parse } from 'smol-toml';
import {
  endpoints,
  isManaged,
  mergeBerth,
  normalizeUrl,
  parseHostsToml,
  renderHostsToml,
  type MergeOptions,
} from '../../src/host/hosts-toml.js';
import { unifiedDiff } from '../../src/host/diff.js';

/** What MicroK8s ships as args/certs.d/docker.io/hosts.toml. */
const MICROK8S_DOCKER_IO = 'server = "https://docker.io"\n\n[host."https://registry-1.docker.io"]\n  capabilities = ["pull", "resolve"]\n\n';

/** A site mirror an operator put in front of docker.io, with its own CA and a header. */
const CUSTOM_MIRROR = `# our site mirror, ask Ops before changing
server = "https://registry-1.docker.io"

[host."https://mirror.site.example:8443"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/containerd/certs.d/site-ca.crt"
  [host."https://mirror.site.example:8443".header]
    x-site = ["plant-7"]
`;

const BERTH = 'http://127.0.0.1:5050';
const opts = (o: Partial<MergeOptions> = {}): MergeOptions => ({ berthUrl: BERTH, noFallback: false, fallbackServer: 'https://registry-1.docker.io', ...o });

function merged(text: string | null, o: Partial<MergeOptions> = {}): string {
  const doc = text === null ? null : parseHostsToml(text, 'hosts.toml');
  return renderHostsToml(mergeBerth(doc, opts(o)).doc);
}

type Parsed = { server?: string; host?: Record<string, Record<string, unknown>> };

t.test('MicroK8s docker.io file: berth first, registry-1.docker.io kept behind it, server kept', async (t) => {
  const out = merged(MICROK8S_DOCKER_IO);
  const back = parse(out) as Parsed;
  t.equal(back.server, 'https://docker.io', 'the shipped server stays the fallback');
  t.same(Object.keys(back.host ?? {}), [BERTH, 'https://registry-1.docker.io'], 'berth is tried first, then the shipped host');
  t.same(back.host?.[BERTH], { capabilities: ['pull', 'resolve'] });
  t.same(back.host?.['https://registry-1.docker.io'], { capabilities: ['pull', 'resolve'] });
  t.ok(isManaged(out), 'carries the berth header');
  t.ok(out.search(/^server =/m) < out.search(/^\[host\./m), 'server is written before the host tables');
  t.same(endpoints(parseHostsToml(out, 'x')), [BERTH, 'https://registry-1.docker.io', 'https://docker.io'], 'the order containerd tries');
});

t.test('a custom mirror keeps its ca, its header table and its place after berth', async (t) => {
  const back = parse(merged(CUSTOM_MIRROR)) as Parsed;
  t.equal(back.server, 'https://registry-1.docker.io');
  t.same(Object.keys(back.host ?? {}), [BERTH, 'https://mirror.site.example:8443']);
  t.same(back.host?.['https://mirror.site.example:8443'], {
    capabilities: ['pull', 'resolve'],
    ca: '/etc/containerd/certs.d/site-ca.crt',
    header: { 'x-site': ['plant-7'] },
  });
});

t.test('a new file: berth as the host, the upstream as server (containerd 1.6 needs a host table)', async (t) => {
  const out = merged(null, { fallbackServer: 'https://quay.io' });
  const back = parse(out) as Parsed;
  t.equal(back.server, 'https://quay.io');
  t.same(back.host, { [BERTH]: { capabilities: ['pull', 'resolve'] } });
});

t.test('merging is idempotent: a second merge renders byte for byte the same', async (t) => {
  for (const [name, text] of [['microk8s', MICROK8S_DOCKER_IO], ['custom', CUSTOM_MIRROR], ['new', null]] as const) {
    for (const noFallback of [false, true]) {
      const once = merged(text, { noFallback });
      t.equal(merged(once, { noFallback }), once, `${name}, noFallback=${noFallback}`);
    }
  }
});

t.test('--no-fallback: berth is server and the only host; other ways out are reported', async (t) => {
  const doc = parseHostsToml(CUSTOM_MIRROR, 'x');
  const res = mergeBerth(doc, opts({ noFallback: true }));
  const back = parse(renderHostsToml(res.doc)) as Parsed;
  t.equal(back.server, BERTH);
  t.same(Object.keys(back.host ?? {}), [BERTH], 'berth is named in both places');
  t.match(res.notes.join('\n'), /removed host https:\/\/mirror\.site\.example:8443/);
  t.match(res.notes.join('\n'), /replaced server https:\/\/registry-1\.docker\.io/);
});

t.test('a no-fallback file turned back: server returns to the upstream', async (t) => {
  const noFb = merged(MICROK8S_DOCKER_IO, { noFallback: true });
  const back = parse(merged(noFb, { fallbackServer: 'https://registry-1.docker.io' })) as Parsed;
  t.equal(back.server, 'https://registry-1.docker.io');
  t.same(Object.keys(back.host ?? {}), [BERTH]);
});

t.test("berth's own host table: capabilities enforced, other keys kept, --ca added", async (t) => {
  const text = `server = "https://registry-1.docker.io"\n[host."https://registry-1.docker.io"]\ncapabilities = ["pull"]\n[host."${BERTH}/"]\ncapabilities = ["pull"]\ndial_timeout = "2s"\n`;
  const res = mergeBerth(parseHostsToml(text, 'x'), opts({ ca: '/etc/berth/ca.crt' }));
  t.equal(res.doc.hosts.length, 2, 'a trailing slash names the same berth: no duplicate');
  t.same(res.doc.hosts[0], { url: BERTH, table: { capabilities: ['pull', 'resolve'], dial_timeout: '2s', ca: '/etc/berth/ca.crt' } });
  t.same(res.doc.hosts[1]?.table, { capabilities: ['pull'] }, 'other hosts untouched');
});

t.test('files berth cannot merge are refused with the file named', async (t) => {
  t.throws(() => parseHostsToml('server = "x\n', '/c/docker.io/hosts.toml'), { name: 'HostsTomlError', code: 'HOSTS_TOML', message: /^\/c\/docker\.io\/hosts\.toml: not valid TOML/ });
  t.throws(() => parseHostsToml('server = 5\n', 'f'), /`server` must be a string/);
  t.throws(() => parseHostsToml('host = "x"\n', 'f'), /`host` must be a table/);
  t.throws(() => parseHostsToml('[host]\n"https://a" = 1\n', 'f'), /host "https:\/\/a" must be a table/);
});

t.test('URL normalization', async (t) => {
  t.equal(normalizeUrl('HTTP://127.0.0.1:80/'), 'http://127.0.0.1');
  t.equal(normalizeUrl('https://h:443/v2/proj/'), 'https://h/v2/proj');
  t.equal(normalizeUrl('not a url/'), 'not a url');
});

t.test('unified diff', async (t) => {
  t.equal(unifiedDiff('a', 'b', 'x\n', 'x\n'), '', 'equal texts: no diff');
  t.equal(unifiedDiff('a', 'b', null, 'one\ntwo\n'), '--- /dev/null\n+++ b\n@@ -0,0 +1,2 @@\n+one\n+two\n');
  t.equal(unifiedDiff('a', 'b', 'one\n', null), '--- a\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-one\n');
  const before = Array.from({ length: 20 }, (_, i) => `l${i}`).join('\n') + '\n';
  const after = before.replace('l2\n', 'L2\n').replace('l17\n', 'L17\n');
  const d = unifiedDiff('a', 'b', before, after);
  t.match(d, /@@ -1,6 \+1,6 @@\n l0\n l1\n-l2\n\+L2\n l3/, 'first hunk with context, deletion before addition');
  t.match(d, /@@ -15,6 \+15,6 @@/, 'a second hunk for the far change');
});

t.test("a private-CA upstream kept as fallback server gets its ca, berth's host its own", async (t) => {
  const fresh = mergeBerth(null, { berthUrl: 'https://127.0.0.1:5050', noFallback: false, fallbackServer: 'https://harbor.example.com', ca: '/etc/berth/berth-ca.crt', serverCa: '/etc/berth/harbor-ca.crt' });
  const text = renderHostsToml(fresh.doc);
  const parsed = parseHostsToml(text, 'hosts.toml');
  t.equal(parsed.server, 'https://harbor.example.com');
  t.same(parsed.top, [['ca', '/etc/berth/harbor-ca.crt']], 'the server is verified with the upstream CA');
  t.equal(parsed.hosts[0]?.table.ca, '/etc/berth/berth-ca.crt', "berth's host with berth's CA");
  const again = mergeBerth(parsed, { berthUrl: 'https://127.0.0.1:5050', noFallback: false, fallbackServer: 'https://harbor.example.com', ca: '/etc/berth/berth-ca.crt', serverCa: '/etc/berth/harbor-ca.crt' });
  t.equal(renderHostsToml(again.doc), text, 'idempotent');
  const other = mergeBerth(parseHostsToml('server = "https://mirror.site"\n[host."https://mirror.site"]\n  capabilities = ["pull"]\n', 'x'), { berthUrl: 'https://127.0.0.1:5050', noFallback: false, fallbackServer: 'https://harbor.example.com', serverCa: '/etc/berth/harbor-ca.crt' });
  t.same(other.doc.top, [], "someone else's server keeps its own settings");
  const nf = mergeBerth(null, { berthUrl: 'https://127.0.0.1:5050', noFallback: true, fallbackServer: 'https://harbor.example.com', serverCa: '/etc/berth/harbor-ca.crt' });
  t.same(nf.doc.top, [], 'no fallback: no server CA to write');
});
