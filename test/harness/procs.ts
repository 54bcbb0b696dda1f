/**
 * Process plumbing for the test harness: free ports, long-running services
 * with captured output, readiness polling and temp directories.
 *
 * No child may outlive its test process, however that process ends:
 *  - children are started through `setpriv --pdeathsig KILL` (util-linux) when it
 *    is installed, so the kernel SIGKILLs them if the test process dies, even by
 *    SIGKILL or a tap timeout (setpriv execs, so the pid is the real program's);
 *  - on a normal process exit, survivors get a SIGKILL by process id.
 * No signal listeners are installed: they would stop tap's own signal handling
 * (signal-exit only re-raises when it is the sole listener).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** The part of a tap `Test` the harness needs: LIFO teardown callbacks. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Asks the kernel for a free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('freePort: no TCP address'));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

export interface Service {
  readonly name: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** stdout+stderr interleaved as received, bounded to the last ~2 MB. */
  output(): string;
  /** Resolves once `re` matches the output (already seen or new); rejects on timeout or exit. */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<void>;
  /** Calls `fn` for every complete output line from now on; returns an unsubscribe function. */
  onLine(fn: (line: string, stream: 'stdout' | 'stderr') => void): () => void;
  /** Sends `signal` (default SIGTERM), SIGKILL after `timeoutMs` (default 10 s); resolves once exited. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
  /** SIGKILL; resolves once exited. */
  kill9(): Promise<void>;
  /** Exit code, or null when ended by a signal (or when it could not be spawned). */
  readonly exited: Promise<number | null>;
  /** True once the process has exited. */
  hasExited(): boolean;
}

const OUTPUT_LIMIT = 2 * 1024 * 1024;

const live = new Set<ChildProcess>();
let exitHooksInstalled = false;

function killSurvivors(): void {
  for (const proc of live) {
    if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  live.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', killSurvivors);
}

let setprivPath: string | null | undefined;

/** `[cmd, args]` wrapped in `setpriv --pdeathsig KILL --` when setpriv exists. */
export function withParentDeathSignal(cmd: string, args: readonly string[]): [string, string[]] {
  if (setprivPath === undefined) {
    setprivPath = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;
  }
  return setprivPath ? [setprivPath, ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, [...args]];
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Starts a long-running process with both output streams captured. */
export function spawnService(
  name: string,
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): Service {
  installExitHooks();
  const [file, argv] = withParentDeathSignal(cmd, args);
  const proc = spawn(file, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let chunks: string[] = [];
  let size = 0;
  let spawnError: Error | null = null;
  const dataListeners = new Set<(text: string) => void>();
  const lineListeners = new Set<(line: string, stream: 'stdout' | 'stderr') => void>();
  const partial = { stdout: '', stderr: '' };

  const append = (text: string): void => {
    chunks.push(text);
    size += text.length;
    if (size > OUTPUT_LIMIT * 1.5) {
      const all = chunks.join('').slice(-OUTPUT_LIMIT);
      chunks = [all];
      size = all.length;
    }
    for (const fn of dataListeners) fn(text);
  };

  const feed = (stream: 'stdout' | 'stderr') => (text: string) => {
    append(text);
    const joined = partial[stream] + text;
    const lines = joined.split('\n');
    partial[stream] = lines.pop() ?? '';
    for (const line of lines) for (const fn of lineListeners) fn(line, stream);
  };
  // setEncoding: multi-byte characters split across chunks decode correctly.
  proc.stdout?.setEncoding('utf8').on('data', feed('stdout'));
  proc.stderr?.setEncoding('utf8').on('data', feed('stderr'));

  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    proc.on('error', (err) => {
      spawnError = err;
      append(`\n[harness] ${name}: spawn error: ${err.message}\n`);
      if (proc.pid === undefined) {
        done = true;
        resolve(null);
      }
    });
    proc.once('exit', (code, signal) => {
      done = true;
      live.delete(proc);
      // A surviving grandchild could hold our pipes open and keep the test
      // process alive: give the last output a moment, then let go of them.
      setTimeout(() => {
        proc.stdout?.destroy();
        proc.stderr?.destroy();
      }, 1000).unref();
      append(`\n[harness] ${name} (pid ${proc.pid ?? '?'}) exited: code=${code} signal=${signal}\n`);
      resolve(code);
    });
  });

  if (proc.pid === undefined) {
    throw new Error(`${name}: could not spawn ${cmd}${spawnError ? `: ${String(spawnError)}` : ''}`);
  }
  live.add(proc);
  const pid = proc.pid;

  const output = (): string => {
    const all = chunks.join('');
    chunks = [all];
    return all.length > OUTPUT_LIMIT ? all.slice(-OUTPUT_LIMIT) : all;
  };

  const waitForOutput = (re: RegExp, timeoutMs = 30_000): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      // Test the full history once, then each new chunk with some preceding
      // context so a match split across two chunks is still found.
      let tail = output();
      const matches = (s: string): boolean => {
        re.lastIndex = 0;
        return re.test(s);
      };
      if (matches(tail)) {
        resolve();
        return;
      }
      tail = tail.slice(-8192);
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        dataListeners.delete(onData);
        if (err) reject(err);
        else resolve();
      };
      const onData = (text: string): void => {
        const window = tail + text;
        if (matches(window)) finish();
        else tail = window.slice(-8192);
      };
      const timer = setTimeout(() => {
        finish(new Error(`${name}: no output matching ${re} within ${timeoutMs} ms; output:\n${output().slice(-4000)}`));
      }, timeoutMs);
      dataListeners.add(onData);
      void exited.then((code) => {
        // Give the last chunk a chance to be matched before declaring failure.
        setImmediate(() => {
          if (!dataListeners.has(onData)) return;
          if (matches(output())) finish();
          else finish(new Error(`${name} exited (code ${code}) before output matched ${re}; output:\n${output().slice(-4000)}`));
        });
      });
    });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<void> => {
    if (done) return;
    try {
      process.kill(pid, signal);
    } catch {
      // exited in between
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const res = await Promise.race([exited, timedOut]);
    clearTimeout(timer);
    if (res === 'timeout' && !done) {
      append(`\n[harness] ${name}: no exit ${timeoutMs} ms after ${signal}, sending SIGKILL\n`);
      await kill9();
    }
  };

  const kill9 = async (): Promise<void> => {
    if (done) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited in between
    }
    await exited;
  };

  return {
    name,
    pid,
    proc,
    output,
    waitForOutput,
    onLine(fn) {
      lineListeners.add(fn);
      return () => {
        lineListeners.delete(fn);
      };
    },
    stop,
    kill9,
    exited,
    hasExited: () => done,
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as raw bytes (for digests of what a tool printed). */
  stdoutBuf: Buffer;
}

/**
 * Runs a command to completion and captures its output (no shell). A command
 * still running after `timeoutMs` is killed (SIGKILL, by pid) and the promise
 * rejects with what it printed so far. Never rejects for a non-zero exit.
 */
export function run(
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions & { timeoutMs?: number; input?: string | Buffer } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [file, argv] = withParentDeathSignal(cmd, args);
    const proc = spawn(file, argv, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    proc.stdout?.on('data', (b: Buffer) => out.push(b));
    proc.stderr?.on('data', (b: Buffer) => err.push(b));
    if (opts.input !== undefined) {
      proc.stdin?.on('error', () => undefined); // EPIPE when the command exits without reading
      proc.stdin?.end(opts.input);
    }
    if (proc.pid !== undefined) {
      installExitHooks();
      live.add(proc);
    }
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      if (proc.pid !== undefined) {
        try {
          process.kill(proc.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      reject(
        new Error(
          `${cmd} ${args.join(' ')}: still running after ${timeoutMs} ms, killed\n` +
            `stdout: ${Buffer.concat(out).toString('utf8').slice(-4000)}\n` +
            `stderr: ${Buffer.concat(err).toString('utf8').slice(-4000)}`,
        ),
      );
    }, timeoutMs);
    proc.once('error', (e) => {
      clearTimeout(timer);
      live.delete(proc);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(proc);
      resolve({
        code: code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : -1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        stdoutBuf: Buffer.concat(out),
      });
    });
  });
}

/** Like `run`, but rejects (with the command's output) unless it exits 0. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions & { timeoutMs?: number; input?: string | Buffer } = {},
): Promise<RunResult> {
  const res = await run(cmd, args, opts);
  if (res.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${res.code}\nstdout: ${res.stdout.slice(-4000)}\nstderr: ${res.stderr.slice(-4000)}`);
  }
  return res;
}

export interface WaitForHttpOptions {
  timeoutMs?: number;
  /** Which statuses count as "up"; default: any answer at all. */
  ok?: (status: number) => boolean;
  /** Accept any TLS certificate (https URLs only). Default true: test peers use self-signed certs. */
  insecure?: boolean;
  /** Poll interval in ms (default 50). */
  intervalMs?: number;
  /** Stop early (reject) when this promise settles, e.g. a service's `exited`. */
  abortOn?: Promise<unknown>;
}

/** One GET; resolves with the status, rejects on connection errors. */
export function httpStatus(url: string, insecure = true, timeoutMs = 2000): Promise<number> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(
      u,
      { method: 'GET', timeout: timeoutMs, ...(u.protocol === 'https:' ? { rejectUnauthorized: !insecure } : {}) },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.once('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.once('error', reject);
    req.end();
  });
}

/** Polls `url` at short intervals until it answers (with an acceptable status). */
export async function waitForHttp(url: string, opts: WaitForHttpOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const interval = opts.intervalMs ?? 50;
  const ok = opts.ok ?? (() => true);
  const deadline = Date.now() + timeoutMs;
  let aborted = false;
  let last = 'no attempt';
  void opts.abortOn?.then(
    () => (aborted = true),
    () => (aborted = true),
  );
  for (;;) {
    try {
      const status = await httpStatus(url, opts.insecure ?? true);
      if (ok(status)) return;
      last = `status ${status}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (aborted) throw new Error(`waitForHttp ${url}: gave up (watched process ended); last: ${last}`);
    if (Date.now() >= deadline) throw new Error(`waitForHttp ${url}: not ready after ${timeoutMs} ms; last: ${last}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/**
 * Polls a condition (sync or async) until it holds. For state that offers no
 * event to wait on (files appearing, CLI queries); prefer events where they exist.
 */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) throw new Error(`waitFor: ${what}: not true after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

/** Creates a fresh directory under os.tmpdir() (set BERTH_TEST_KEEP_TMP=1 to keep them for debugging). */
export function makeTempDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix.endsWith('-') ? prefix : `${prefix}-`));
}

/** Removes a directory tree, unless BERTH_TEST_KEEP_TMP is set. */
export async function cleanup(dir: string): Promise<void> {
  if (process.env.BERTH_TEST_KEEP_TMP) return;
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Registers `fn` as a teardown on `t` (tap runs teardowns last-registered first). */
export function registerCleanup(t: Teardown, fn: () => unknown): void {
  t.teardown(fn);
}

/** makeTempDir + a teardown on `t` that removes it. */
export async function tempDirFor(t: Teardown, prefix: string): Promise<string> {
  const dir = await makeTempDir(prefix);
  t.teardown(() => cleanup(dir));
  return dir;
}
