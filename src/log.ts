/**
 * pino: JSON to stdout (journald captures it), pretty lines on a TTY. Secrets are redacted by path
 * as a second line of defence; the first is never putting them in a log
 * object at all.
 */
import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';

/**
 * pino-pretty only for a person at a terminal: loaded on that path alone, so
 * the daemon under systemd, the snap or Kubernetes (stdout a pipe) does not
 * carry it (~1.4 MiB RSS, measured).
 */
function loadPretty(): typeof import('pino-pretty') {
  return createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
}

/**
 * Explicit paths only: wildcard paths cost work on every log line (they
 * showed in the per-request profile), and berth never puts a secret in a
 * log object to begin with.
 */
export const REDACT_PATHS = [
  'password',
  'token',
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'upstream.password',
  'harbor.password',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const opts: pino.LoggerOptions = {
    level,
    base: { service: 'berth' },
    redact: { paths: REDACT_PATHS, censor: '<redacted>' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination) return pino(opts, destination);
  // A person at a terminal gets readable lines; journald and pipes get JSON.
  if (process.stdout.isTTY) return pino(opts, loadPretty()({ sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' }));
  return pino(opts);
}
