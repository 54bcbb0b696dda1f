/**
 * Reading containerd's version and CRI registry settings, and what doctor says
 * about them: the ':'-separated config_path that containerd 2.1+ ignores on its
 * transfer-service pull path, an unset config_path, mirrors beside it.
 */
import t from 'tap';
import {
  analyzeRegistrySettings,
  locateContainerdConfig,
  parseContainerdVersion,
  readRegistrySettings,
  type ContainerdSite,
  type ContainerdVersion,
} from '../../src/host/containerd-config.js';

const site: ContainerdSite = { file: '/etc/containerd/config.toml', editFile: '/etc/containerd/config.toml', restart: 'sudo systemctl restart containerd', substitutions: {} };
const v = (s: string): ContainerdVersion => parseContainerdVersion(`containerd github.com/containerd/containerd ${s} abc`)!;
const DIR = '/etc/containerd/certs.d';

const V2_LIST = `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`;
const V3_LIST = `version = 3
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'
`;
const V2_SINGLE = `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`;

t.test('containerd --version, Debian and upstream builds', async (t) => {
  t.same(parseContainerdVersion('containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3'), { text: '1.6.20~ds1', major: 1, minor: 6, patch: 20 });
  t.same(parseContainerdVersion('containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376\n'), { text: 'v2.1.4', major: 2, minor: 1, patch: 4 });
  t.equal(parseContainerdVersion('something else'), null);
});

t.test('settings from each config version', async (t) => {
  const s2 = readRegistrySettings(V2_LIST, 'f');
  t.equal(s2.configPath, '/etc/containerd/certs.d:/etc/docker/certs.d');
  t.equal(s2.configVersion, 2);
  t.equal(readRegistrySettings(V3_LIST, 'f').configPath, '/etc/containerd/certs.d:/etc/docker/certs.d');
  t.equal(readRegistrySettings('[plugins.cri.registry]\nconfig_path = "/x"\n', 'f').configPath, '/x', 'version 1 table');
  t.equal(readRegistrySettings('version = 2\n', 'f').configPath, undefined);
  t.equal(readRegistrySettings('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = ""\n', 'f').configPath, undefined, 'empty is unset');
  t.ok(readRegistrySettings('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n', 'f').criDisabled);
  t.throws(() => readRegistrySettings('version = [', '/etc/containerd/config.toml'), /\/etc\/containerd\/config\.toml: not valid TOML/);
});

t.test("a ':' list: an error from containerd 2.1 on, a warning before, fine with use_local_image_pull", async (t) => {
  const list = readRegistrySettings(V2_LIST, site.file);
  const e21 = analyzeRegistrySettings(readRegistrySettings(V3_LIST, site.file), v('v2.1.4'), site, DIR);
  t.equal(e21.findings.length, 1);
  t.equal(e21.findings[0]?.level, 'error');
  t.match(e21.findings[0]?.what, /':'-separated list: containerd v2\.1\.4 pulls through its transfer service/);
  t.match(e21.findings[0]?.fix, /config_path = "\/etc\/containerd\/certs\.d" \(one directory\).*use_local_image_pull = true.*sudo systemctl restart containerd/);
  t.same(e21.dirs, ['/etc/containerd/certs.d', '/etc/docker/certs.d']);

  const w16 = analyzeRegistrySettings(list, v('1.6.20'), site, DIR);
  t.equal(w16.findings[0]?.level, 'warn', 'containerd 1.6 reads the list');
  t.match(w16.findings[0]?.what, /containerd 2\.1\+ ignores it/);

  const local = analyzeRegistrySettings(readRegistrySettings(V3_LIST + "[plugins.'io.containerd.cri.v1.images']\nuse_local_image_pull = true\n", site.file), v('2.1.4'), site, DIR);
  t.equal(local.findings[0]?.level, 'ok');
  t.equal(analyzeRegistrySettings(list, null, site, DIR).findings[0]?.level, 'warn', 'unknown version: a warning');
});

t.test('one directory is ok on every version', async (t) => {
  for (const ver of ['1.6.20', '2.0.0', '2.1.4']) {
    const a = analyzeRegistrySettings(readRegistrySettings(V2_SINGLE, site.file), v(ver), site, DIR);
    t.same(a.findings.map((f) => f.level), ['ok'], ver);
    t.same(a.dirs, [DIR]);
  }
});

t.test('config_path unset: an error on 1.x; on 2.x the built-in list applies', async (t) => {
  const unset = readRegistrySettings('version = 2\n', site.file);
  const e16 = analyzeRegistrySettings(unset, v('1.6.20'), site, DIR);
  t.equal(e16.findings[0]?.level, 'error');
  t.match(e16.findings[0]?.what, /config_path is not set/);
  t.match(e16.findings[0]?.fix, /config_path = "\/etc\/containerd\/certs\.d" under \[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\]/);
  t.same(e16.dirs, []);
  const e21 = analyzeRegistrySettings(readRegistrySettings('version = 3\n', site.file), v('2.1.4'), site, DIR);
  t.equal(e21.findings[0]?.level, 'error');
  t.match(e21.findings[0]?.what, /containerd 2's default/);
});

t.test('mirrors beside config_path make containerd refuse CRI; mirrors alone bypass certs.d', async (t) => {
  const both = readRegistrySettings(`${V2_SINGLE}[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\nendpoint = ["https://registry-1.docker.io"]\n`, site.file);
  const a = analyzeRegistrySettings(both, v('1.6.20'), site, DIR);
  t.equal(a.findings[0]?.level, 'error');
  t.match(a.findings[0]?.what, /refuses to load its CRI plugin/);
  const old = readRegistrySettings(`version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\nendpoint = ["https://registry-1.docker.io"]\n`, site.file);
  const b = analyzeRegistrySettings(old, v('1.6.20'), site, DIR);
  t.same(b.findings.map((f) => f.level), ['error']);
  t.match(b.findings[0]?.what, /deprecated registry\.mirrors \(docker\.io\)/);
  const tls = readRegistrySettings(`${V2_SINGLE}[plugins."io.containerd.grpc.v1.cri".registry.configs."h.example".tls]\ninsecure_skip_verify = true\n`, site.file);
  t.match(analyzeRegistrySettings(tls, v('1.6.20'), site, DIR).findings.map((f) => f.what).join('\n'), /configs\.\*\.tls \(h\.example\)/);
});

t.test('CRI disabled: only a warning, no directories', async (t) => {
  const a = analyzeRegistrySettings(readRegistrySettings('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n', site.file), v('1.6.20'), site, DIR);
  t.same(a.findings.map((f) => f.level), ['warn']);
  t.same(a.dirs, []);
});

t.test("MicroK8s' template: ${SNAP_DATA} resolved, fixes say where to edit and how to restart", async (t) => {
  const files = new Set(['/var/snap/microk8s/current/args/containerd-template.toml']);
  const mk = locateContainerdConfig(undefined, (p) => files.has(p));
  t.equal(mk?.editFile, '/var/snap/microk8s/current/args/containerd-template.toml');
  t.equal(mk?.restart, 'sudo snap restart microk8s');
  const text = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n    config_path = "${SNAP_DATA}/args/certs.d"\n';
  const s = readRegistrySettings(text, mk!.file, mk!.substitutions);
  t.equal(s.configPath, '/var/snap/microk8s/current/args/certs.d');
  files.add('/var/snap/microk8s/current/args/containerd.toml');
  t.equal(locateContainerdConfig(undefined, (p) => files.has(p))?.file, '/var/snap/microk8s/current/args/containerd.toml', 'the rendered file is what containerd reads');
  t.equal(locateContainerdConfig(undefined, () => false), null);
  t.equal(locateContainerdConfig('/srv/ctd.toml', () => false)?.file, '/srv/ctd.toml');
});
