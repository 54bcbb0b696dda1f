/** One import for tests: `import { startRegistry, makeImage, … } from '../harness/index.js'`. */
export * from './procs.js';
export * from './token-server.js';
export * from './registry.js';
export * from './images.js';
export * from './containerd.js';
export * from './tls.js';
