import { defineConfig } from 'vitest/config'

// Tests start real brokers, hubs and agents on loopback; they are slower than
// unit tests, and the timeouts only guard against a hang: about ten times
// what the slowest test of that kind takes on a quiet 2-core machine, so that
// a slower, busier CI machine still passes.
//
// Three groups, one after the other. First the unit and component tests
// (hub.*, agent.*, broker.*, cli.*, ...), two files at a time: each file's
// hub or agent is small, and they passed side by side even with the fleet
// tests beside them. Then the acceptance and simulator tests, two at a time
// too: each runs a hub and some agents (the simulator's 50 devices, a
// browser for the dashboard) and judges what they do, with bounds that only
// guard against a hang. Last, one file at a time, the tests that load the
// machine on purpose (a fleet of 2,000 agents, twice the load the hub holds,
// saturating observers, backlog storms, the benchmarks' probes) and judge
// what the hub does under that load, which a second file beside them would
// change.
const SYSTEM = ['test/acceptance.*.test.ts', 'test/sim.*.test.ts', 'test/bench.*.test.ts']
const LOAD = ['test/acceptance.sim-scale.test.ts', 'test/acceptance.overload.test.ts', 'test/acceptance.observers.test.ts', 'test/acceptance.rules-backlog.test.ts', 'test/bench.*.test.ts']

export default defineConfig({
  test: {
    // Each test file fails if it leaves a socket, server, timer or child process behind.
    setupFiles: ['test/support/leak-check.setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'components',
          include: ['test/**/*.test.ts'],
          exclude: SYSTEM,
          // After-hooks run last-registered first, so the setup file's leak check follows each file's own teardown.
          sequence: { hooks: 'stack', groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'system',
          include: SYSTEM,
          exclude: LOAD,
          sequence: { hooks: 'stack', groupOrder: 1 },
        },
      },
      {
        extends: true,
        test: {
          name: 'load',
          include: LOAD,
          fileParallelism: false,
          sequence: { hooks: 'stack', groupOrder: 2 },
        },
      },
    ],
  },
})
