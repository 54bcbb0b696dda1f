'use strict';
/*
 * Builds the addon with the node-gyp npm runs install scripts with. Node's own
 * headers are used when they are installed next to it (Debian's nodejs, the
 * node images, the snap's node), so nothing is downloaded; otherwise node-gyp
 * fetches them as usual. This package is an optional dependency of berth: when
 * the build fails, npm leaves it out and berth serves blobs without sendfile.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

if (process.platform !== 'linux') {
  console.error('berth-sendfile: Linux only; berth uses its copying path here');
  process.exit(1);
}
const prefix = path.resolve(path.dirname(process.execPath), '..');
const args = ['rebuild'];
if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const gyp = process.env.npm_config_node_gyp;
const r = gyp ? spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' }) : spawnSync('node-gyp', args, { stdio: 'inherit', shell: false });
if (r.error) console.error(`berth-sendfile: ${r.error.message}`);
process.exit(r.status ?? 1);
