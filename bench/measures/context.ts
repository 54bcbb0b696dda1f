/** What every measure gets: the peers, the plan, the client, and where its rows go. */
import type { BlobClient } from '../client.js';
import type { BenchEnv, Plan } from '../env.js';
import type { Row } from '../report.js';

export interface Ctx {
  env: BenchEnv;
  plan: Plan;
  client: BlobClient;
  log(line: string): void;
  /** Adds a row to the report (ratio and target are worked out there). */
  add(row: Row): void;
  note(text: string): void;
  /** When measure 4's load ended (for the idle RSS taken a minute later). */
  loadEndedAt?: number;
}

export interface Measure {
  id: number;
  name: string;
  run(ctx: Ctx): Promise<void>;
}
