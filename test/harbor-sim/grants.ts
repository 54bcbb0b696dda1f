/**
 * The grant berth's Harbor robot needs, as docs/harbor.md ("The robot account") lists it:
 * give it to the simulator's robot, `addRobot(name, secret, { permissions: [{ kind:
 * 'project', namespace: '*', access: ROBOT_ACCESS }] })`, so a test runs berth with what an
 * operator is told to grant, no more. Preheat Policy list is there because `prefetch_preheat`
 * defaults to true. addRobot copies it, so a test cannot change it for the next.
 */
import type { RobotAccess } from './model.js';

export const ROBOT_ACCESS: RobotAccess[] = [
  ['project', 'read'],
  ['metadata', 'list'],
  ['metadata', 'read'],
  ['repository', 'list'],
  ['repository', 'read'],
  ['repository', 'pull'],
  ['artifact', 'list'],
  ['artifact', 'read'],
  ['artifact-addition', 'read'],
  ['accessory', 'list'],
  ['tag', 'list'],
  ['preheat-policy', 'list'],
].map(([resource, action]) => ({ resource: resource!, action: action! }));
