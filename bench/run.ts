/**
 * `npm run bench [-- --quick] [--only=1,3] [--profile] [--node-flags="…"] [--berth=main.js] [--unit=PATH|none] [--no-build] [--no-install]`
 *
 * Starts every peer on loopback, runs the measures (each at least 3 times),
 * writes bench/results/latest.json and latest.md, prints the table, and stops
 * everything it started by pid. A missed target is a row in the table, never
 * an exit code: the exit code is 1 only when the bench itself could not run
 * (a peer did not start, a measure threw).
 *
 * Every berth runs with the environment of the systemd unit (its NODE_OPTIONS
 * and the rest of its `Environment=`), read from systemd/berth.service of the
 * checkout measured, so memory is the unit's; `--unit=PATH` names another
 * unit file, `--unit=none` runs bare node.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { runOk } from '../test/harness/procs.js';
import { REPO_ROOT } from './berth.js';
import { BlobClient } from './client.js';
import { plan as makePlan, startEnv } from './env.js';
import { airgap } from './measures/airgap.js';
import { coalescing } from './measures/coalescing.js';
import { coldFill } from './measures/cold-fill.js';
import type { Ctx, Measure } from './measures/context.js';
import { ctrPull } from './measures/ctr-pull.js';
import { idleAfterLoad, manifests } from './measures/manifests.js';
import { site } from './measures/site.js';
import { startup } from './measures/startup.js';
import { warmBlob } from './measures/warm-blob.js';
import { summarizeProfiles } from './profile.js';
import { finish, machine, markdown, writeReport, type Report, type Row } from './report.js';
import { Scope } from './scope.js';
import { findUnit, unitEnv } from './unit.js';

const USAGE = 'usage: npm run bench [-- --quick] [--only=1,2,…,8] [--profile] [--node-flags="--flag …"] [--berth=PATH/cli/main.js] [--unit=PATH|none] [--no-build] [--no-install]';

interface Args {
  quick: boolean;
  only: Set<number> | null;
  profile: boolean;
  build: boolean;
  install: boolean;
  /** Extra node flags for the berth under test (e.g. to try heap settings). */
  nodeFlags: string[];
  /** Another build of berth to measure (its cli/main.js), e.g. a patched copy for an A/B. */
  main: string | undefined;
  /** `--unit=`: the systemd unit whose environment berth gets ('none': none). */
  unit: string | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { quick: false, only: null, profile: false, build: true, install: true, nodeFlags: [], main: undefined, unit: undefined };
  for (const arg of argv) {
    if (arg === '--quick') a.quick = true;
    else if (arg === '--profile') a.profile = true;
    else if (arg === '--no-build') a.build = false;
    else if (arg === '--no-install') a.install = false;
    else if (arg.startsWith('--unit=')) a.unit = arg.slice(7);
    else if (arg.startsWith('--node-flags=')) a.nodeFlags = arg.slice(13).split(/\s+/).filter((f) => f.length > 0);
    else if (arg.startsWith('--berth=')) a.main = path.resolve(arg.slice(8));
    else if (arg.startsWith('--only=')) {
      const ids = arg.slice(7).split(',').map(Number);
      if (ids.some((n) => !Number.isInteger(n) || n < 1 || n > 8)) throw new Error(`--only takes measure numbers 1-8: ${arg}\n${USAGE}`);
      a.only = new Set(ids);
    } else throw new Error(`unknown argument ${arg}\n${USAGE}`);
  }
  return a;
}

const started = Date.now();
const log = (line: string): void => {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}\n`);
};

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const resultsDir = path.join(REPO_ROOT, 'bench', 'results');
  const profileDir = path.join(resultsDir, 'profiles', new Date().toISOString().replace(/[:.]/g, '-'));
  if (args.install) {
    log('checking the peers are installed (bench/install-deps.sh)');
    await runOk('bash', [path.join(REPO_ROOT, 'bench', 'install-deps.sh')], { timeoutMs: 600_000 });
  }
  if (args.build) {
    log('building berth (npm run build)');
    await runOk('npm', ['run', 'build'], { cwd: REPO_ROOT, timeoutMs: 600_000 });
  }

  const p = makePlan(args.quick);
  const scope = new Scope();
  scope.closeOnSignals();
  const client = new BlobClient();
  const rows: Row[] = [];
  const notes: string[] = [
    'Peers on 127.0.0.1: Distribution 2.8 upstream behind a token server, Distribution in proxy mode and berth in front of it (both with the same upstream user and token flow, both anonymous to their clients), nginx (sendfile, one process) over the upstream\'s blob files.',
    'Plain Node: node:http piping createReadStream (highWaterMark 1 MiB) to the response, in a process of its own with no flags, over the same files at the same URLs as nginx: berth ÷ plain Node is berth\'s own overhead.',
    'CPU per GiB served: utime+stime (+cutime+cstime, and every live descendant\'s) from /proc/PID/stat of each server\'s process, read before and after each transfer, summed over a run and divided by the bytes the clients received; 10 ms ticks. The client\'s CPU (the bench process) is in no figure.',
    'Blob throughput client: undici request() in the bench process, body bytes counted and dropped; it shares the cores with the servers, so nginx\'s figure is the ceiling of client + loopback here.',
    `Manifest load: wrk -t1 -c32 -d${p.wrkSeconds}s per run. berth runs with its default config (log level info: one JSON line per request).`,
  ];
  const failures: Report['failures'] = [];
  let code = 0;
  try {
    log(`${args.quick ? 'quick' : 'full'} run, ${p.runs} runs per measure`);
    const flags = [...args.nodeFlags, ...(args.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])];
    if (args.nodeFlags.length > 0) notes.push(`berth ran with node flags: ${args.nodeFlags.join(' ')}.`);
    if (args.main) notes.push(`berth under test: ${args.main} (not this checkout's dist/).`);
    const unitFile = findUnit(REPO_ROOT, args.unit, args.main);
    const unit = unitFile ? unitEnv(unitFile) : null;
    notes.push(unit ? `berth ran with the environment of ${path.relative(REPO_ROOT, unit.file) || unit.file} (${Object.entries(unit.env).map(([k, v]) => `${k}=${v}`).join(' ') || 'empty'})${unit.skipped.length > 0 ? `; not copied: ${unit.skipped.join(', ')}` : ''}.` : 'berth ran without the systemd unit\'s environment (--unit=none).');
    const env = await startEnv(scope, p, log, { nodeFlags: flags, ...(args.main ? { main: args.main } : {}), ...(unit ? { env: unit.env } : {}) });
    const ctx: Ctx = { env, plan: p, client, log, add: (row) => rows.push(finish(row)), note: (n) => notes.push(n) };
    // 5 restarts berth (cold pulls), so it runs before 4, whose berth then sits idle through 6.
    // 7 starts berths of its own (a site with peers, and one without); 8 runs the CLI alone.
    const measures: Measure[] = [warmBlob, coldFill(scope), coalescing, ctrPull(scope), manifests, startup(scope), idleAfterLoad, site(scope), airgap(scope)];
    for (const m of measures) {
      if (scope.closed) break;
      if (args.only && !args.only.has(m.id)) continue;
      log(`measure ${m.id}: ${m.name}`);
      const t0 = Date.now();
      try {
        await m.run(ctx);
        log(`measure ${m.id} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } catch (err) {
        if (scope.closed) break;
        code = 1;
        const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
        failures.push({ measure: `${m.id} ${m.name}`, error: text });
        log(`measure ${m.id} FAILED: ${text}`);
      }
    }
  } catch (err) {
    code = 1;
    const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
    failures.push({ measure: 'set-up', error: text });
    log(`set-up FAILED: ${text}`);
  } finally {
    await client.close();
    log('stopping the peers');
    await scope.close();
  }

  const report: Report = {
    date: new Date().toISOString(),
    mode: args.quick ? 'quick' : 'full',
    durationS: (Date.now() - started) / 1000,
    machine: machine(),
    rows,
    failures,
    notes,
  };
  const out = await writeReport(resultsDir, report);
  process.stdout.write(markdown(report));
  log(`wrote ${path.relative(process.cwd(), out.json)} and ${path.relative(process.cwd(), out.md)}`);
  if (args.profile) {
    const files = (await readdir(profileDir).catch(() => [] as string[])).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(profileDir, f));
    if (files.length > 0) {
      const summary = await summarizeProfiles(files);
      process.stdout.write(`\n## berth CPU profile\n\n${summary}`);
      log(`profiles in ${path.relative(process.cwd(), profileDir)}`);
    }
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
