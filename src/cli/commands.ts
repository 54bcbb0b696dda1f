/**
 * Every `berth <command>`, in the order `berth --help` lists them. Each module is imported when
 * its command runs: `berth serve` does not carry the other commands' code (idle RSS,
 * docs/performance.md).
 */
import type { Command } from './command.js';

export const COMMANDS: Record<string, () => Promise<Command>> = {
  serve: async () => (await import('./serve.js')).serveCommand,
  config: async () => (await import('./config-cmd.js')).configCommand,
  prefetch: async () => (await import('./prefetch.js')).prefetchCommand,
  export: async () => (await import('./export-cmd.js')).exportCommand,
  import: async () => (await import('./import-cmd.js')).importCommand,
  inventory: async () => (await import('./airgap-cmds.js')).inventoryCommand,
  keygen: async () => (await import('./airgap-cmds.js')).keygenCommand,
  status: async () => (await import('./status.js')).statusCommand,
  verify: async () => (await import('./maintenance-cmds.js')).verifyCommand,
  gc: async () => (await import('./maintenance-cmds.js')).gcCommand,
  unpin: async () => (await import('./maintenance-cmds.js')).unpinCommand,
  sync: async () => (await import('./harbor-cmds.js')).syncCommand,
  audit: async () => (await import('./harbor-cmds.js')).auditCommand,
  configure: async () => (await import('./configure.js')).configureCommand,
  doctor: async () => (await import('./doctor.js')).doctorCommand,
};
