/**
 * Every command's --help against the flags its parser accepts (Command.options), both ways: a
 * flag the parser takes is in the help's Options list (with its short form) and, unless every
 * command shares it (--config, --help, --verbose), in the Usage lines; a flag the help names is one
 * the parser takes. Session 5 found `keygen --help` without --config and the usage lines of
 * verify, gc and unpin without [--json], all of which they accepted.
 */
import t from 'tap';
import { COMMANDS } from '../../src/cli/commands.js';

/** Flags every command takes, which the top-level help says once: the Usage lines may leave them out. */
const SHARED = new Set(['config', 'help', 'verbose']);

function block(help: string, start: number): string {
  const end = help.indexOf('\n\n', start);
  return help.slice(start, end < 0 ? undefined : end);
}

t.test('every flag a command parses is in its --help, and every flag its --help names is parsed', async (t) => {
  for (const [name, load] of Object.entries(COMMANDS)) {
    const c = await load();
    t.equal(c.name, name);
    const usageAt = c.help.indexOf('Usage: berth ');
    const optionsAt = c.help.indexOf('\nOptions:\n');
    t.equal(usageAt, 0, `${name}: the help opens with its usage`);
    t.ok(optionsAt > 0, `${name}: the help has an Options list`);
    // Prose in parentheses ("the volumes of export --split") is not a flag of this command.
    const usage = block(c.help, usageAt).replace(/\([^)]*\)/g, '');
    const listed = new Map<string, string | undefined>();
    for (const m of block(c.help, optionsAt + 1).matchAll(/^ {2}(?:-([a-zA-Z]), )?--([a-z][a-z0-9-]*)/gm)) listed.set(m[2]!, m[1]);

    for (const [flag, def] of Object.entries(c.options)) {
      t.ok(listed.has(flag), `${name}: --${flag} is in the Options list`);
      if (listed.has(flag)) t.equal(listed.get(flag), def.short, `${name}: --${flag} is listed with its short form (${def.short ?? 'none'})`);
      if (SHARED.has(flag)) continue;
      const inUsage = new RegExp(`(^|[\\s\\[|])(--${flag}|${def.short ? `-${def.short}` : '--'})(?![\\w-])`, 'm').test(usage);
      t.ok(inUsage, `${name}: --${flag} is in the Usage lines`);
    }
    for (const [flag, short] of listed) {
      t.ok(Object.hasOwn(c.options, flag), `${name}: --${flag}, in the Options list, is a flag the parser accepts`);
      if (short !== undefined) t.equal(c.options[flag]?.short, short, `${name}: -${short} is --${flag}'s short form in the parser too`);
    }
    for (const m of usage.matchAll(/(?:^|[\s[|])(--?)([a-zA-Z][a-z0-9-]*)(?![\w-])/gm)) {
      const [, dashes, flag] = m;
      const known = dashes === '--' ? Object.hasOwn(c.options, flag!) : Object.values(c.options).some((d) => d.short === flag);
      t.ok(known, `${name}: ${dashes}${flag}, in the Usage lines, is a flag the parser accepts`);
    }
  }
});
