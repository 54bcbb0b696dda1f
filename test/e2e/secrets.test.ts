/**
 * Secrets stay secret: with upstream credentials (password_file) and a token
 * server, berth pulls, fails (a wrong password, a refused scope, upstream
 * errors, an upstream that echoes our credential back in its error), and the
 * test then greps everything berth ever showed anyone (its whole log output
 * at debug level, /metrics, every response header and body, `berth config`
 * and `berth status`) for the password, the Basic credential, and every
 * bearer token the token server issued to berth (captured on the wire by the
 * proxy in front of the registry). None may appear.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';
import { fetchOnce, startFaultProxy, type Fetched } from '../harness/fault-proxy.js';

// Regressions guarded here: cache hits once ignored the links table (content served by digest under any
// ns and any repository), and an upstream's error text once went verbatim into client details and logs.

t.test('no credential or token ever leaves berth', async (t) => {
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const wrong = `wrong-${randomBytes(12).toString('hex')}`;
  const token = await startTokenServer(t, {
    users: { edge: password, pusher: 'push-secret' },
    grant: (user, repo, requested) => {
      if (user === 'pusher') return requested;
      if (repo.startsWith('secret/')) return [];
      if (repo.startsWith('private/')) return user === 'edge' ? ['pull'] : [];
      return requested.filter((a) => a === 'pull');
    },
  });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-secrets');
  const priv = await makeImage(path.join(work, 'priv'), { layers: 2, layerSize: 20_000, seed: 'secrets-priv', tag: 'v1' });
  await pushImage(priv.layoutDir, 'v1', registry, 'private/app:v1', { creds: 'pusher:push-secret' });
  await pushImage(priv.layoutDir, 'v1', registry, 'secret/app:v1', { creds: 'pusher:push-secret' });

  const proxy = await startFaultProxy(t, { target: registry.url });
  const goodFile = path.join(work, 'edge.password');
  const badFile = path.join(work, 'bad.password');
  fs.writeFileSync(goodFile, `${password}\n`, { mode: 0o600 });
  fs.writeFileSync(badFile, `${wrong}\n`, { mode: 0o600 });
  const berth = await startBerth(t, {
    logLevel: 'debug',
    upstreams: [
      { registry: 'docker.io', url: proxy.url, username: 'edge', password_file: goodFile },
      { registry: 'bad.example', url: proxy.url, username: 'edge', password_file: badFile },
    ],
  });

  const seen: Array<{ what: string; res: Fetched }> = [];
  const get = async (what: string, p: string, headers?: Record<string, string>) => {
    const res = await fetchOnce(`${berth.url}${p}`, headers ? { headers } : {});
    seen.push({ what, res });
    return res;
  };
  const layer = priv.manifests[0]!.layers[0]!;

  await t.test('drive pulls and failures', async (t) => {
    t.equal((await get('private manifest', '/v2/private/app/manifests/v1?ns=docker.io')).status, 200, 'a private image pulls with the configured credentials');
    t.equal((await get('private blob', `/v2/private/app/blobs/${layer}?ns=docker.io`)).status, 200);
    t.equal((await get('private HEAD', `/v2/private/app/manifests/${priv.manifestDigest}?ns=docker.io`)).status, 200);

    // berth words an upstream auth refusal as Docker Hub does (404 NAME_UNKNOWN: unknown or not ours to see), or 403 DENIED.
    const refused = (r: Fetched) => (r.status === 403 || r.status === 404) && /"code":"(DENIED|NAME_UNKNOWN)"/.test(r.body.toString('utf8'));
    const denied = await get('wrong password', '/v2/private/app/manifests/v1?ns=bad.example');
    t.ok(refused(denied), `a wrong password: a clean refusal (${denied.status} ${denied.body.toString('utf8').slice(0, 80)})`);
    const deniedBlob = await get('wrong password, blob', `/v2/private/app/blobs/${priv.manifests[0]!.config}?ns=bad.example`);
    t.ok(refused(deniedBlob), `a wrong password, blob: a clean refusal (${deniedBlob.status})`);

    // Content berth fetched with one upstream's credentials, asked for through an upstream whose credentials fail,
    // or through a repository that does not hold it: the upstream would refuse both.
    const crossNs = await get('cached private blob through the failing upstream', `/v2/private/app/blobs/${layer}?ns=bad.example`);
    t.ok(refused(crossNs), `a cached private blob through an upstream that refuses berth: refused (${crossNs.status})`);
    const crossRepo = await get('cached private blob through another repository', `/v2/library/public/blobs/${layer}?ns=docker.io`);
    t.ok(crossRepo.status === 404 || refused(crossRepo), `a cached private blob through another repository: not served (${crossRepo.status})`);
    const crossManifest = await get('cached private manifest through another repository', `/v2/library/public/manifests/${priv.manifestDigest}?ns=docker.io`);
    t.ok(crossManifest.status === 404 || refused(crossManifest), `a cached private manifest through another repository: not served (${crossManifest.status})`);

    const scope = await get('refused scope', '/v2/secret/app/manifests/v1?ns=docker.io');
    t.ok(refused(scope), `a scope the token server refuses: a clean refusal (${scope.status})`);

    t.equal((await get('unknown repository', '/v2/private/nope/manifests/v1?ns=docker.io')).status, 404);

    // An upstream error, and one that echoes the credential it was sent (a broken or hostile registry).
    const boom = proxy.addRule({ method: 'GET', path: /\/manifests\/boom$/, fault: { kind: 'status', status: 500 } });
    t.equal((await get('upstream 500', '/v2/private/app/manifests/boom?ns=docker.io')).status, 502);
    boom.remove();
    const echo = proxy.addRule({
      method: 'GET',
      path: /\/manifests\/echo$/,
      authorized: true,
      // The token's last 48 characters: short enough to survive any truncation of the upstream's message.
      fault: { kind: 'status', status: 400, body: (req) => JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: `rejected credential …${(req.authorization ?? '').slice(-48)}` }] }) },
    });
    const echoed = await get('upstream echoing the credential', '/v2/private/app/manifests/echo?ns=docker.io');
    t.ok(echoed.status >= 400, `an error (${echoed.status})`);
    echo.remove();
    const echo401 = proxy.addRule({
      method: 'GET',
      path: /\/blobs\//,
      authorized: true,
      times: 2,
      fault: { kind: 'status', status: 401, body: (req) => JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: `token …${(req.authorization ?? '').slice(-48)} revoked` }] }) },
    });
    const revoked = await get('upstream echoing the token in a 401', `/v2/private/app/blobs/${priv.manifests[0]!.layers[1]!}?ns=docker.io`);
    t.ok(revoked.status >= 400, `an error (${revoked.status})`);
    echo401.remove();

    await proxy.close();
    t.equal((await get('upstream gone', '/v2/private/app/manifests/v2?ns=docker.io')).status, 503, 'upstream unreachable: 503');
  });

  await t.test('grep everything berth showed for the secrets', async (t) => {
    const bearer = proxy
      .requests()
      .map((r) => r.authorization)
      .filter((a): a is string => a !== undefined && a.startsWith('Bearer '))
      .map((a) => a.slice('Bearer '.length));
    const tokens = [...new Set(bearer)];
    t.ok(tokens.length >= 2, `berth used tokens the token server issued (${tokens.length} distinct)`);
    t.ok(token.requests.some((r) => r.user === 'edge' && r.status === 200), 'the token server issued tokens to edge');
    t.ok(token.requests.some((r) => r.user === 'edge' && r.status === 401), 'and refused the wrong password');

    const secrets: Array<[string, string]> = [
      ['the password', password],
      ['the wrong password', wrong],
      ['the Basic credential', Buffer.from(`edge:${password}`).toString('base64')],
      ['the wrong Basic credential', Buffer.from(`edge:${wrong}`).toString('base64')],
      ...tokens.flatMap((tok, i): Array<[string, string]> => [
        [`bearer token ${i + 1}`, tok],
        // The signature alone is what makes a token usable; look for it on its own too.
        [`bearer token ${i + 1}'s signature`, tok.split('.')[2] ?? tok],
        [`the last 48 characters of bearer token ${i + 1}`, tok.slice(-48)],
      ]),
    ];

    const metrics = (await fetchOnce(`${berth.url}/metrics`)).body.toString('utf8');
    const config = await berth.cli(['config']);
    const status = await berth.cli(['status', '--json']);
    const places: Array<[string, string]> = [
      ['the log output', berth.service.output()],
      ['/metrics', metrics],
      ['berth config', config.stdout + config.stderr],
      ['berth status', status.stdout + status.stderr],
      ...seen.map(({ what, res }): [string, string] => [`the answer to "${what}"`, JSON.stringify(res.headers) + res.body.toString('latin1')]),
    ];
    t.ok(berth.logs().some((l) => l.level === 20), 'the log to search is at debug level (upstream exchanges and all)');
    t.match(config.stdout, /"password": "<redacted>"/, 'berth config printed the upstreams, redacted');
    const leaks: string[] = [];
    for (const [where, text] of places) for (const [what, secret] of secrets) if (text.includes(secret)) leaks.push(`${what} in ${where}`);
    t.same(leaks.filter((l) => !l.startsWith('the last 48')), [], 'no secret in logs, metrics, command output or any answer');
    // Only the echoing upstream puts a token fragment into an answer; berth should not pass it on.
    t.same(leaks.filter((l) => l.startsWith('the last 48')), [], 'a credential the upstream echoes in its error is not relayed');
  });
});
