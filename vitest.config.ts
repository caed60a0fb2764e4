import { defineConfig } from 'vitest/config'

// Tests start real brokers, hubs and agents on loopback; they are slower than
// unit tests, so files run in parallel workers and the timeouts only guard
// against a hang: about ten times what the slowest test of that kind takes on
// a quiet 2-core machine, so that a slower, busier CI machine still passes.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each test file fails if it leaves a socket, server, timer or child process behind.
    setupFiles: ['test/support/leak-check.setup.ts'],
    // After-hooks run last-registered first, so the setup file's leak check follows each file's own teardown.
    sequence: { hooks: 'stack' },
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
})
