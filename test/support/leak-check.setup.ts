import { afterAll, beforeAll } from 'vitest'
import { expectNoLeaks, resourceCounts } from './leaks.js'

/**
 * Every test file of the suite is leak-checked (vitest.config.ts setupFiles):
 * the handles open before the file runs are counted, and after its own
 * teardown (this file's afterAll is registered first, so it runs last) the
 * same kinds must be back to that count, or the file fails naming what it
 * left: nothing listening, no socket, no timer, no child process.
 *
 * Per file, not per test: a file may share one hub across its tests, and the
 * HTTP client keeps its connections to it alive between them. Files whose
 * tests each start and stop their own parts check each test as well
 * (leakCheckedCleanups in test/broker.harness.ts).
 */
let baseline: Record<string, number> = {}

beforeAll(() => { baseline = resourceCounts() })

afterAll(async () => { await expectNoLeaks(baseline) })
