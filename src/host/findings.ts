/** What `berth doctor` reports: one finding per line, each with the fix when it is not ok. */
export type Level = 'ok' | 'warn' | 'error';

export interface Finding {
  level: Level;
  /** Stable id of the check, for scripts reading --json (e.g. "containerd.config_path"). */
  check: string;
  what: string;
  fix?: string;
}

export function finding(level: Level, check: string, what: string, fix?: string): Finding {
  return fix === undefined || level === 'ok' ? { level, check, what } : { level, check, what, fix };
}

/** `ok|warn|error  <what>  — fix: <how>` */
export function formatFinding(f: Finding): string {
  const line = `${f.level.padEnd(5)}  ${f.what}`;
  return f.fix === undefined ? line : `${line}  — fix: ${f.fix}`;
}

export function hasErrors(findings: readonly Finding[]): boolean {
  return findings.some((f) => f.level === 'error');
}
