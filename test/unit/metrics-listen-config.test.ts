/**
 * [server] metrics_listen: absent by default (/metrics stays on the main
 * listener only), set in the file, from BERTH_SERVER_METRICS_LISTEN (how the
 * DaemonSet gives each pod its own address) or `snap set berth
 * server.metrics-listen=…`; refused when it is not host:port or is the main
 * listener's socket.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { snapSettingsToToml } from '../../src/host/snap-config.js';

type Test = Pick<typeof t, 'teardown' | 'fail'>;

function tempDir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-metrics-listen-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function load(t: Test, server: string, env: Record<string, string> = {}) {
  const dir = tempDir(t);
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(file, `[server]\n${server}\n[cache]\ndir = "${dir}/cache"\n`);
  return loadConfig({ file, env, cwd: dir });
}

function refusal(t: Test, server: string, env: Record<string, string> = {}): string {
  try {
    load(t, server, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  t.fail('expected a ConfigError');
  return '';
}

t.test('absent by default: no second listener', async (t) => {
  t.equal(loadConfig({ env: {}, cwd: tempDir(t) }).server.metricsListen, undefined);
  t.equal(load(t, 'listen = "127.0.0.1:5050"').server.metricsListen, undefined);
});

t.test('from the file and from the environment', async (t) => {
  t.same(load(t, 'listen = "127.0.0.1:5050"\nmetrics_listen = "0.0.0.0:9464"').server.metricsListen, { listen: '0.0.0.0:9464', host: '0.0.0.0', port: 9464 });
  t.same(load(t, 'listen = "127.0.0.1:5050"', { BERTH_SERVER_METRICS_LISTEN: '10.0.0.11:9464' }).server.metricsListen, { listen: '10.0.0.11:9464', host: '10.0.0.11', port: 9464 }, 'BERTH_SERVER_METRICS_LISTEN');
  t.same(load(t, 'listen = "127.0.0.1:5050"\nmetrics_listen = "[::1]:9464"').server.metricsListen, { listen: '[::1]:9464', host: '::1', port: 9464 });
  t.same(load(t, 'listen = "127.0.0.1:5050"\nmetrics_listen = "127.0.0.2:5050"').server.metricsListen?.port, 5050, 'the same port on another address is a socket of its own');
});

t.test('refused: not host:port, or the main listener again', async (t) => {
  t.match(refusal(t, 'metrics_listen = "9464"'), /server\.metrics_listen.*not host:port/);
  t.match(refusal(t, 'metrics_listen = "::1:9464"'), /server\.metrics_listen.*brackets/);
  t.match(refusal(t, 'listen = "127.0.0.1:5050"\nmetrics_listen = "127.0.0.1:5050"'), /server\.metrics_listen.*is also listen.*address or port of its own/);
  t.match(refusal(t, 'listen = "0.0.0.0:5050"\nmetrics_listen = "10.0.0.11:5050"'), /is also listen/, 'a wildcard listen holds the port on every address');
  t.match(refusal(t, 'listen = "127.0.0.1:5050"', { BERTH_SERVER_METRICS_LISTEN: '$(POD_IP):9464' }), /BERTH_SERVER_METRICS_LISTEN|metrics_listen/, 'an unexpanded Kubernetes reference is named');
});

t.test('snap set berth server.metrics-listen=…', async (t) => {
  const toml = snapSettingsToToml({ server: { listen: '127.0.0.1:5050', 'metrics-listen': '10.0.0.11:9464' } }, '/var/snap/berth/common');
  t.match(toml, /metrics_listen = "10\.0\.0\.11:9464"/);
});
