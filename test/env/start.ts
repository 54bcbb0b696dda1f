/**
 * A test environment to try berth by hand, the same real parts the tests use
 * (SPEC "On the node": scripts/ holds the test-environment starter; run it
 * with scripts/test-env.sh). On loopback, with ports chosen now: a token
 * server and Distribution behind it (docker.io's auth flow) holding
 * library/hello:v1, berth (this checkout's dist/) mirroring it as docker.io,
 * and, as root, a containerd of its own whose hosts directory
 * `berth configure containerd` wrote. Prints what to run, then waits:
 * Ctrl-C or SIGTERM stops everything by process id and removes the temp dirs.
 * Nothing outside those temp dirs is touched.
 */
import path from 'node:path';
import { startBerth, BERTH_BIN } from '../harness/berth.js';
import { startContainerd, type Containerd } from '../harness/containerd.js';
import { makeImage, pushImage } from '../harness/images.js';
import { run, tempDirFor, type Teardown } from '../harness/procs.js';
import { startRegistry } from '../harness/registry.js';
import { startTokenServer } from '../harness/token-server.js';

const say = (line: string): void => void process.stdout.write(`${line}\n`);

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('-h') || args.includes('--help')) {
    say('Usage: scripts/test-env.sh [--no-containerd]\n\nStarts Distribution (token auth), berth and (as root) containerd on loopback; Ctrl-C stops them.');
    return 0;
  }
  const unknown = args.filter((a) => a !== '--no-containerd');
  if (unknown.length > 0) {
    process.stderr.write(`test-env: unknown argument ${unknown[0]} (see --help)\n`);
    return 2;
  }
  const teardowns: Array<() => unknown> = [];
  const t: Teardown = { teardown: (fn) => void teardowns.push(fn) };
  const stopAll = async (): Promise<void> => {
    for (const fn of teardowns.reverse()) {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`test-env: stopping: ${(err as Error).message}\n`);
      }
    }
  };
  try {
    const work = await tempDirFor(t, 'berth-test-env');
    const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
    const registry = await startRegistry(t, { token });
    const img = await makeImage(path.join(work, 'img'), { layers: 2, layerSize: 1_000_000, seed: 'test-env', tag: 'v1' });
    await pushImage(img.layoutDir, 'v1', registry, 'library/hello:v1', { creds: 'pusher:push-secret' });
    const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });

    let containerd: Containerd | null = null;
    const hostsDir = path.join(work, 'certs.d');
    if (!args.includes('--no-containerd') && process.getuid?.() === 0) {
      containerd = await startContainerd(t);
      const configured = await run(process.execPath, [BERTH_BIN, 'configure', 'containerd', '--config', berth.configFile, '--hosts-dir', hostsDir]);
      if (configured.code !== 0) throw new Error(`berth configure containerd: ${configured.stderr.trim()}`);
    }

    const cli = (cmd: string) => `node ${path.relative(process.cwd(), BERTH_BIN) || BERTH_BIN} ${cmd} --config ${berth.configFile}`;
    say(`upstream    Distribution ${registry.url} as docker.io (token auth), holding docker.io/library/hello:v1`);
    say(`berth       ${berth.url}   config ${berth.configFile}   cache ${berth.cacheDir}`);
    if (containerd) say(`containerd  socket ${containerd.socket}   namespace ${containerd.namespace}   hosts dir ${hostsDir}`);
    else say('containerd  not started (needs root; or --no-containerd)');
    say('\nTry:');
    if (containerd) {
      say(`  ctr -a ${containerd.socket} -n ${containerd.namespace} images pull --hosts-dir ${hostsDir} docker.io/library/hello:v1`);
      say(`  ctr -a ${containerd.socket} -n ${containerd.namespace} images rm docker.io/library/hello:v1   # then pull again: a hit`);
    }
    say(`  curl -s '${berth.url}/v2/library/hello/manifests/v1?ns=docker.io' -H 'Accept: application/vnd.oci.image.manifest.v1+json'`);
    say(`  ${cli('status')}`);
    say(`  ${cli('audit')}`);
    say(`  curl -s ${berth.url}/metrics | grep berth_cache_requests_total`);
    say('\nCtrl-C stops everything.');

    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    say('test-env: stopping');
    return 0;
  } finally {
    await stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`test-env: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
