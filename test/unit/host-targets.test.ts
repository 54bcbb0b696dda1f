/** Where berth writes and which URL it writes: hosts directory choice, berth's URL, registry names. */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { berthUrlFromConfig, checkBerthUrl, registryDirName, resolveHostsDir, DEFAULT_HOSTS_DIR, MICROK8S_HOSTS_DIR } from '../../src/host/targets.js';

t.test('the hosts directory: flag, then MicroK8s, then the containerd default', async (t) => {
  const none = () => false;
  const microk8s = (p: string) => p === MICROK8S_HOSTS_DIR;
  t.same(resolveHostsDir({ hostsDir: '/srv/certs.d' }, microk8s), { dir: '/srv/certs.d', why: 'flag' });
  t.same(resolveHostsDir({ microk8s: true }, none), { dir: MICROK8S_HOSTS_DIR, why: 'microk8s' });
  t.same(resolveHostsDir({}, microk8s), { dir: MICROK8S_HOSTS_DIR, why: 'microk8s-detected' });
  t.same(resolveHostsDir({}, none), { dir: DEFAULT_HOSTS_DIR, why: 'default' });
});

t.test("berth's URL from [server]", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-targets-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const url = (server: string) => {
    const file = path.join(dir, 'berth.toml');
    fs.writeFileSync(file, `[server]\n${server}\n`);
    return berthUrlFromConfig(loadConfig({ file, env: {}, cwd: dir }));
  };
  t.equal(url('listen = "127.0.0.1:5050"'), 'http://127.0.0.1:5050');
  t.equal(url('listen = "0.0.0.0:5051"'), 'http://127.0.0.1:5051', 'a wildcard listener is reached over loopback');
  t.equal(url('listen = "[::]:5052"'), 'http://[::1]:5052');
  t.equal(url('listen = "[::1]:5053"'), 'http://[::1]:5053');
  fs.writeFileSync(path.join(dir, 'c.pem'), 'x');
  fs.writeFileSync(path.join(dir, 'k.pem'), 'x');
  t.equal(url(`listen = "10.0.0.5:5050"\ntls_cert_file = "${dir}/c.pem"\ntls_key_file = "${dir}/k.pem"`), 'https://10.0.0.5:5050', 'https when berth serves TLS');
});

t.test('--berth-url takes scheme://host:port only', async (t) => {
  t.equal(checkBerthUrl('http://10.1.2.3:5050/'), 'http://10.1.2.3:5050');
  t.equal(checkBerthUrl('https://berth.site:443'), 'https://berth.site');
  t.throws(() => checkBerthUrl('ftp://10.1.2.3:5050'), /http:\/\/ or https:\/\//);
  t.throws(() => checkBerthUrl('10.1.2.3:5050'), /is not a URL/);
  t.throws(() => checkBerthUrl('nonsense'), /is not a URL/);
  t.throws(() => checkBerthUrl('http://u:p@h:1'), /no path, query or credentials/);
  t.throws(() => checkBerthUrl('http://h:1/v2'), /no path/);
});

t.test('registry names become directory names only when they are host[:port]', async (t) => {
  t.equal(registryDirName('docker.io'), 'docker.io');
  t.equal(registryDirName('localhost:32000'), 'localhost:32000');
  for (const bad of ['../x', 'a/b', '.hidden', 'a..b', '', 'h:port']) t.throws(() => registryDirName(bad), /not host\[:port\]/, bad);
});
