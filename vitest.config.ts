import { defineConfig } from 'vitest/config'

// Tests start real brokers, hubs and agents on loopback; they are slower than
// unit tests, so files run in parallel workers and the timeouts only guard
// against a hang: about ten times what the slowest test of that kind takes on
// a quiet 2-core machine, so that a slower, busier CI machine still passes.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
})
