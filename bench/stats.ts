/** Median, min and max of repeated runs: the bench reports all three, never a single run. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) throw new Error('summarize: no runs');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, runs: [...values] };
}

export const MiB = 1024 * 1024;

/** MiB/s for `bytes` moved in `ms`. */
export const mibps = (bytes: number, ms: number): number => bytes / MiB / (ms / 1000);

export const now = (): number => Number(process.hrtime.bigint()) / 1e6;
