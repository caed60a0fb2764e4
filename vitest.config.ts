import { defineConfig } from 'vitest/config'

// Tests start real brokers, hubs and agents on loopback; they are slower than
// unit tests, so the timeouts are generous and files run in parallel workers.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    pool: 'forks',
    reporters: ['default'],
  },
})
